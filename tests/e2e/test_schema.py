"""`alb schema`: the JSON Schema editors validate manifests with. Every example validates against it, the
invalid example is refused exactly where a schema can state the rule, and its verdicts agree with
`alb validate` on the rules it expresses."""
import json
import subprocess
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ALB

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "alb.schema.json"
MODELINE = "# yaml-language-server: $schema="


def alb_schema(*args):
    done = subprocess.run([ALB, "schema", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(alb_schema())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def manifest_roots():
    """The alb manifest folders: manifests/ and each example (its manifests/ folder when it has one)."""
    roots = [REPO / "manifests"]
    for example in sorted((REPO / "examples").iterdir()):
        if example.is_dir():
            roots.append(example / "manifests" if (example / "manifests").is_dir() else example)
    return roots


def manifest_files(root):
    """What `alb validate` reads: *.yaml and *.yml, recursively, without names starting with a dot."""
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def node_at(node, path):
    """The YAML node at a JSON Schema instance path (keys and list indices)."""
    for step in path:
        if isinstance(node, yaml.MappingNode):
            node = next(value for key, value in node.value if key.value == step)
        else:
            node = node.value[step]
    return node


def error_locations(validator, path):
    """FILE:LINE:COL of every schema error in a file, where alb reports it: the value of a field, or the
    key of an unknown field."""
    text = path.read_text()
    locations = set()
    for document, root in zip(yaml.safe_load_all(text), yaml.compose_all(text)):
        if document is None:
            continue
        for error in validator.iter_errors(document):
            node = node_at(root, error.absolute_path)
            if error.validator == "additionalProperties":
                allowed = set(error.schema.get("properties", {}))
                for key, _ in node.value:
                    if key.value not in allowed:
                        locations.add("%s:%d:%d" % (path.name, key.start_mark.line + 1, key.start_mark.column + 1))
            else:
                locations.add("%s:%d:%d" % (path.name, node.start_mark.line + 1, node.start_mark.column + 1))
    return locations


def test_the_committed_schema_is_what_alb_schema_prints():
    # Examples point editors at docs/alb.schema.json; regenerate it with `alb schema > docs/alb.schema.json`.
    assert COMMITTED.read_text() == alb_schema()


def test_every_example_validates(validator):
    checked = 0
    for root in manifest_roots():
        if (root / "expected.txt").exists():
            continue  # deliberately invalid: the next test
        for path in manifest_files(root):
            for document in yaml.safe_load_all(path.read_text()):
                if document is None:
                    continue
                errors = ["%s: %s" % (list(e.absolute_path), e.message) for e in validator.iter_errors(document)]
                assert errors == [], "%s: %s" % (path.relative_to(REPO), errors)
                checked += 1
    assert checked >= 10


def test_every_example_names_the_schema_for_editors():
    for root in manifest_roots():
        for path in manifest_files(root):
            first = path.read_text().splitlines()[0]
            assert first.startswith(MODELINE), "%s: no yaml-language-server line" % path.relative_to(REPO)
            target = (path.parent / first[len(MODELINE):].strip()).resolve()
            assert target == COMMITTED, "%s points at %s" % (path.relative_to(REPO), target)


def test_the_invalid_example_is_refused_where_a_schema_can_say_so(validator):
    folder = REPO / "examples" / "invalid"
    expected = (folder / "expected.txt").read_text().splitlines()
    by_schema = (folder / "schema-expected.txt").read_text().splitlines()
    assert by_schema and set(by_schema) <= set(expected), "schema-expected.txt must be lines of expected.txt"
    found = set()
    for path in manifest_files(folder):
        found |= error_locations(validator, path)
    assert found == {line.split(": error: ")[0] for line in by_schema}


def doc(kind, spec, name="x"):
    return "apiVersion: alb/v1\nkind: %s\nmetadata:\n  name: %s\nspec:\n%s" % (
        kind, name, textwrap.indent(textwrap.dedent(spec).strip() + "\n", "  "))


BASE = doc("LoadBalancer", "{}", "lb") + "---\n" + doc("ServerGroup", "servers: [{address: 10.0.0.1, port: 80}]", "g") \
    + "---\n" + doc("Certificate", "{type: Server, certificate: c.pem, privateKey: k.pem}", "srv") + "---\n"
FORWARD = "defaultAction: {forwardGroup: {serverGroups: [{name: g}]}}"

# (document, valid?): each rule once broken and once kept. `alb validate` must agree with the schema.
CASES = [
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\n" + FORWARD), True),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 0\n" + FORWARD), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\nidleTimeout: 3601\n" + FORWARD), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: TCP\nport: 80\n" + FORWARD), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\nidleTimout: 5\n" + FORWARD), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80"), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\ndefaultAction: {forwardGroup: {serverGroups: []}}"),
     False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\nhttp2: true\n" + FORWARD), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\nhttp2: false\n" + FORWARD), True),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTPS\nport: 443\n" + FORWARD), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTPS\nport: 443\ncertificates: {server: srv}\n" + FORWARD), True),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\nsecurityPolicy: tls_cipher_policy_1_2\n" + FORWARD),
     False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTPS\nport: 443\ncertificates: {server: srv}\n"
                     "mutualAuthentication: {enabled: true}\n" + FORWARD), False),
    (doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\nheaders: {slbId: true, xForwardedFor: false}\n"
         + FORWARD), True),
    (doc("LoadBalancer", "edition: Basic\nquotas: {listeners: 81}"), False),
    (doc("LoadBalancer", "edition: Standard\nquotas: {listeners: 81}"), True),
    (doc("LoadBalancer", "quotas: {maxIdleTimeout: 1200}"), False),
    (doc("LoadBalancer", "upgraded: true\nquotas: {maxIdleTimeout: 1200}"), True),
    (doc("ServerGroup", "scheduler: Wlc\nhealthCheck: {enabled: true, interval: 51}"), False),
    (doc("ServerGroup", "healthCheck: {enabled: true, path: health}"), False),
    (doc("ServerGroup", "healthCheck: {codes: [http_2xx, http_6xx]}"), False),
    (doc("ServerGroup", "stickySession: {enabled: true, type: Insert, cookieTimeout: 86400}"), True),
    (doc("Certificate", "{type: Server, certificate: c.pem}"), False),
    (doc("Certificate", "{type: CA, certificate: ca.pem, privateKey: k.pem}"), False),
    (doc("Certificate", "{type: CA, certificate: ca.pem}"), True),
    (doc("SecurityPolicy", "{tlsVersions: [TLSv1.2, TLSv1.4], ciphers: [ECDHE-RSA-AES128-GCM-SHA256]}"), False),
    (doc("SecurityPolicy", "{tlsVersions: [TLSv1.2], ciphers: []}"), False),
    (doc("SecurityPolicy", "{tlsVersions: [TLSv1.2], ciphers: [ECDHE-RSA-AES128-GCM-SHA256]}"), True),
    (doc("Listener", "{}", name="Web_1"), False),
]


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory):
    """c.pem and k.pem (a server certificate and its key) and ca.pem (a CA), as the cases name them."""
    folder = tmp_path_factory.mktemp("pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", str(folder / "k.pem"), "-out", str(folder / "c.pem"),
                    "-subj", "/CN=x.example", "-addext", "subjectAltName=DNS:x.example",
                    "-addext", "basicConstraints=critical,CA:FALSE"], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem"),
                    "-subj", "/CN=Test CA"], check=True, capture_output=True)
    return {name: (folder / name).read_bytes() for name in ("c.pem", "k.pem", "ca.pem")}


@pytest.mark.parametrize("text,valid", CASES, ids=range(len(CASES)))
def test_schema_and_validate_agree(validator, pem_files, tmp_path, text, valid):
    document = yaml.safe_load(text)
    errors = [e.message for e in validator.iter_errors(document)]
    assert (errors == []) == valid, errors
    (tmp_path / "m").mkdir()
    for name, content in pem_files.items():
        (tmp_path / "m" / name).write_bytes(content)
    (tmp_path / "m" / "all.yaml").write_text(BASE + text)
    done = subprocess.run([ALB, "validate", str(tmp_path / "m")], capture_output=True, text=True, timeout=60)
    assert (done.returncode == 0) == valid, done.stdout + done.stderr


def test_one_kind():
    schema = json.loads(alb_schema("--kind", "Listener"))
    jsonschema.Draft202012Validator.check_schema(schema)
    check = jsonschema.Draft202012Validator(schema)
    listener = yaml.safe_load(doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\n" + FORWARD))
    assert list(check.iter_errors(listener)) == []
    assert list(check.iter_errors(yaml.safe_load(doc("LoadBalancer", "{}"))))  # another kind
    assert set(schema["$defs"]) == {"Metadata", "ListenerSpec"}
    # Descriptions, defaults and enumerations reach editors.
    idle = schema["$defs"]["ListenerSpec"]["properties"]["idleTimeout"]
    assert idle["default"] == 15 and idle["minimum"] == 1 and idle["description"]
    bad = subprocess.run([ALB, "schema", "--kind", "Pool"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Pool" in bad.stderr


def test_validate_suggests_the_nearest_field(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "l.yaml").write_text(BASE + doc("Listener", "loadBalancer: lb\nprotocol: HTTP\nport: 80\n"
                                                      "requestTimeuot: 5\n" + FORWARD))
    done = subprocess.run([ALB, "validate", str(tmp_path / "m")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert 'unknown field "spec.requestTimeuot" (did you mean "requestTimeout"?)' in done.stdout
