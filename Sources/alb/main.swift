import ALBCLI

await ALBCommand.runAsRoot()
