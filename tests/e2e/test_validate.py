"""`alb validate` on good, bad and hostile manifests."""
import subprocess
import time

from conftest import ALB, free_port, line_of, manifest_set, wait_for


def validate(directory):
    return subprocess.run([ALB, "validate", str(directory)], capture_output=True, text=True, timeout=30)


def test_valid_directory_exits_zero(tmp_path):
    (tmp_path / "web.yaml").write_text(manifest_set(8080, [(9001, 100)]))
    result = validate(tmp_path)
    assert result.returncode == 0
    assert "3 resources in 1 file: valid" in result.stdout


def test_every_problem_is_reported_with_position(tmp_path):
    text = manifest_set(70000, [(9001, 100)]).replace("idleTimeout:", "idleTimout:")
    (tmp_path / "web.yaml").write_text(text)
    result = validate(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    path = str(tmp_path / "web.yaml")
    assert any(line.startswith("%s:%d:9: error: " % (path, line_of(text, "port: 70000"))) for line in lines)
    assert any(line.startswith("%s:%d:3: error: " % (path, line_of(text, "idleTimout"))) and "unknown field" in line
               for line in lines)


def test_port_conflict_is_reported(tmp_path):
    extra = """---
apiVersion: alb/v1
kind: Listener
metadata: {name: web2}
spec:
  loadBalancer: lb
  protocol: HTTP
  port: 8080
  defaultAction: {forwardGroup: {serverGroups: [{name: pool}]}}
"""
    (tmp_path / "web.yaml").write_text(manifest_set(8080, [(9001, 100)], extra_listener=extra))
    result = validate(tmp_path)
    assert result.returncode == 1
    assert result.stdout.count("error:") >= 2 and "8080" in result.stdout


def test_alias_bomb_is_refused_quickly(tmp_path):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    previous = "a"
    for name in "bcdefghi":
        bomb += "%s: &%s [%s]\n" % (name, name, ",".join(["*" + previous] * 9))
        previous = name
    (tmp_path / "bomb.yaml").write_text(bomb)
    started = time.monotonic()
    result = validate(tmp_path)
    assert time.monotonic() - started < 5
    assert result.returncode == 1
    assert "alias" in result.stdout


def test_huge_file_is_refused(tmp_path):
    (tmp_path / "huge.yaml").write_text("# " + "x" * (2 << 20) + "\n")
    result = validate(tmp_path)
    assert result.returncode == 1
    assert "huge.yaml:1:1: error:" in result.stdout


def test_a_private_key_pasted_for_its_path_is_refused_and_never_repeated(tmp_path, alb):
    # Until the fourteenth session the PEM was taken for a path: `alb validate`, `alb plan`, status files and their
    # errors then printed the key.
    secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7secretkeymaterial"
    text = """apiVersion: alb/v1
kind: Certificate
metadata: {name: pasted}
spec:
  type: Server
  certificate: main.pem
  privateKey: |
    -----BEGIN PRIVATE KEY-----
    %s
    -----END PRIVATE KEY-----
""" % secret
    (tmp_path / "cert.yaml").write_text(text)
    result = validate(tmp_path)
    assert result.returncode == 1
    assert "%s:7:15: error: spec.privateKey: must be the path of a PEM file, not its content" % (tmp_path / "cert.yaml") \
        in result.stdout, result.stdout
    plan = subprocess.run([ALB, "plan", str(tmp_path), "--status-dir", str(tmp_path.parent / "no-status")],
                          capture_output=True, text=True, timeout=30)
    alb.write("cert.yaml", text)
    alb.start()
    wait_for(lambda: alb.status_of("Certificate", "pasted"), what="the certificate's status")
    shown = result.stdout + result.stderr + plan.stdout + plan.stderr + alb.logs() + alb.run_cli(
        "status", "--status-dir", str(alb.status)).stdout
    for path in alb.status.rglob("*"):
        if path.is_file():
            shown += path.read_text(errors="replace")
    assert secret not in shown and "BEGIN PRIVATE KEY" not in shown


def test_plan_reports_what_validate_reports_and_says_when_it_plans_against_nothing(tmp_path):
    # Until the fourteenth session `alb plan` left certificate files unchecked (exit 2 for a change reconcile then
    # refused) and planned against a mistyped status directory without a word.
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "web.yaml").write_text(manifest_set(free_port(), [(9001, 100)]))
    (tmp_path / "m" / "cert.yaml").write_text(
        "apiVersion: alb/v1\nkind: Certificate\nmetadata: {name: c}\nspec: {type: CA, certificate: missing.pem}\n")
    plan = subprocess.run([ALB, "plan", str(tmp_path / "m"), "--status-dir", str(tmp_path / "sttypo")],
                          capture_output=True, text=True, timeout=30)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert "missing.pem does not exist" in plan.stderr
    assert "holds no live state" in plan.stderr
    (tmp_path / "afile").write_text("x")
    plan = subprocess.run([ALB, "plan", str(tmp_path / "m"), "--status-dir", str(tmp_path / "afile")],
                          capture_output=True, text=True, timeout=30)
    assert plan.returncode == 1 and "afile: error: " in plan.stderr, plan.stderr


def test_usage_errors_exit_1_with_their_message(tmp_path):
    """SPEC's exit codes are 0, 1 and 2: a command line alb cannot use is invalid input (1, not ArgumentParser's
    64), said on stderr with the usage; --help still exits 0."""
    (tmp_path / "m").mkdir()
    for args, says in [(["frobnicate"], "Unexpected argument 'frobnicate'"),
                       (["validate", "--no-such-option", str(tmp_path / "m")], "Unknown option '--no-such-option'"),
                       (["reconcile", "--park-idle-after=-1", str(tmp_path / "m")], "--park-idle-after must not be negative"),
                       (["reconcile", "--drain-timeout", "soon", str(tmp_path / "m")], "drain-timeout")]:
        run = subprocess.run([ALB, *args], capture_output=True, text=True, timeout=30)
        assert run.returncode == 1, (args, run.returncode, run.stderr)
        assert says in run.stderr and "Usage:" in run.stderr, (args, run.stderr)
    assert subprocess.run([ALB, "--help"], capture_output=True, text=True, timeout=30).returncode == 0
    assert subprocess.run([ALB, "reconcile", "--help"], capture_output=True, text=True, timeout=30).returncode == 0
