"""scripts/deploy's real (non --dry-run) path, run against recording stubs of kn and kubectl.

Used by scripts/check-deploy; no cluster is needed. Stubs named `kn` and `kubectl` go first on PATH in
a temp dir. Each call writes its argv to `call-N` (NUL-separated; N counts calls of both tools) and,
for `kubectl apply --filename -`, its stdin to `stdin-N`. They answer the few reads deploy makes:
`kubectl get secret vidmp3-secrets` (exists or NotFound, per scenario), `kubectl get secret ...
--output jsonpath={.data.KEY}` (base64 of the scenario's value), `kubectl create secret generic
--from-file=DIR --dry-run=client --output=yaml` (copies DIR and its modes aside, prints a Secret as
kubectl would) and `kn service describe gateway --output url` (STUB_URL). Every other call exits 0.

A stub that reads stdin records itself only after stdin is closed, that is after the left side of
its pipeline has recorded and exited, so the call order is deterministic.

For each scenario (a first deploy with --image and --namespace, a redeploy changing one secret, a
redeploy changing none) it checks: deploy exits 0 and prints `Gateway URL: STUB_URL`; the calls are exactly what
`--dry-run` prints, in the same order, once the run-time reads are left out (the Secret reads, the
extra `kn service describe`s and the PUBLIC_BASE_URL patch, which --dry-run announces as `#` lines);
the steps keep the order the cluster needs (ORDER below); no Secret value, nor its base64, is in any
argv or in deploy's output; the Secret reaches kubectl through a 0700 dir of 0600 files holding
exactly the expected values, and the dir is gone when deploy exits; the manifests piped through
deploy's sed carry --namespace and --image, never the defaults. A piped manifest is known by the
kinds and names of its documents.
"""
import base64
import os
import re
import shlex
import shutil
import subprocess
import tempfile

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it

DEFAULT_NAMESPACE = "vidmp3"  # what the manifests say; scripts/deploy --namespace rewrites it
SECRET_KEYS = ("DATABASE_URL", "JWT_SECRET", "MONGODB_URI", "SMTP_URL")
STUB_URL = "https://gateway.vidmp3.stub.example"
PLACEHOLDER_DIR = "<private temp dir>"
# What the real path may run that --dry-run shows only as a `#` line (decided at run time).
SECRET_READ = ("kubectl", "get", "secret")

KUBECTL_STUB = r"""#!/bin/sh
# Recording stub of kubectl (scripts/lib/check_deploy_realpath.py).
d=$CHECK_DEPLOY_STUB_DIR
stdin_tmp=
case " $* " in
  *" --filename - "*|*" -f - "*) stdin_tmp=$(mktemp "$d/stdin.XXXXXX"); cat >"$stdin_tmp" ;;
esac
read -r n <"$d/count"; n=$((n + 1)); echo "$n" >"$d/count"
[ -z "$stdin_tmp" ] || mv "$stdin_tmp" "$d/stdin-$n"
printf '%s\0' kubectl "$@" >"$d/call-$n"
case "$1 $2" in
  "get secret")
    for a; do
      case $a in
        "jsonpath={.data."*)
          k=${a#"jsonpath={.data."}; k=${k%"}"}
          [ ! -f "$d/existing/$k" ] || base64 -w0 <"$d/existing/$k"
          exit 0 ;;
      esac
    done
    if [ -d "$d/existing" ]; then echo "secret/vidmp3-secrets"; exit 0; fi
    echo 'Error from server (NotFound): secrets "vidmp3-secrets" not found' >&2
    exit 1 ;;
  "create secret")
    for a; do
      case $a in
        --from-file=*)
          src=${a#--from-file=}
          echo "$src" >"$d/created-$n.path"
          stat -c '%a' "$src" >"$d/created-$n.mode"
          mkdir "$d/created-$n"
          for f in "$src"/*; do
            [ -f "$f" ] || continue
            printf '%s %s\n' "${f##*/}" "$(stat -c '%a' "$f")" >>"$d/created-$n.modes"
            cp "$f" "$d/created-$n/"
          done ;;
      esac
    done
    printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: vidmp3-secrets\ndata:\n'
    for f in "$d/created-$n"/*; do
      [ -f "$f" ] && printf '  %s: %s\n' "${f##*/}" "$(base64 -w0 <"$f")"
    done
    exit 0 ;;
esac
exit 0
"""

KN_STUB = r"""#!/bin/sh
# Recording stub of kn (scripts/lib/check_deploy_realpath.py).
d=$CHECK_DEPLOY_STUB_DIR
read -r n <"$d/count"; n=$((n + 1)); echo "$n" >"$d/count"
printf '%s\0' kn "$@" >"$d/call-$n"
case "$1 $2" in
  "service describe")
    for a; do [ "$a" != url ] || { echo "$CHECK_DEPLOY_STUB_URL"; exit 0; }; done
    echo "Name: $3" ;;
  "service apply") echo "Service '$3' applied" ;;
esac
exit 0
"""


def _token():
    return os.urandom(6).hex()


def scenarios():
    """[(short name, deploy args, env, existing Secret {KEY: value} or None)]; fresh values each run."""
    existing = {
        "DATABASE_URL": f"mysql://vidmp3:db-{_token()}@mysql.db:3306/vidmp3",
        "JWT_SECRET": f"jwt-{_token()}-{_token()}-{_token()}-{_token()}",
        "MONGODB_URI": f"mongodb://vidmp3:mongo-{_token()}@mongo.db:27017/vidmp3",
        "SMTP_URL": f"smtp://mailer:smtp-{_token()}@smtp.example:587",
    }
    return [
        ("first deploy: --image, --namespace, no Secret, JWT_SECRET generated",
         ["--image", "registry.example.com/vidmp3:check-deploy", "--namespace", "vidmp3-staging"],
         {"DATABASE_URL": f"mysql://app:new-{_token()}@mysql.db:3306/vidmp3",
          "MONGODB_URI": f"mongodb+srv://app:new-{_token()}@cluster0.example/vidmp3",
          "SMTP_URL": f"smtps://app:new-{_token()}@smtp.example:465"},
         None),
        ("redeploy: new SMTP_URL, the rest from the Secret",
         ["--image", "registry.example.com/vidmp3:check-deploy-2"],
         {"SMTP_URL": f"smtp://other:chg-{_token()}@smtp2.example:587",
          "PUBLIC_BASE_URL": "https://mp3.example.org", "MAIL_FROM": "vidmp3 <mp3@example.org>"},
         dict(existing)),
        ("redeploy: nothing set, Secret kept",
         ["--image", "registry.example.com/vidmp3:check-deploy-3"], {}, dict(existing)),
    ]


def _secret_forms(value):
    """The strings that would leak `value`: itself, its base64, and its password part."""
    forms = {value, base64.b64encode(value.encode()).decode()}
    m = re.match(r"^[a-z+]+://[^:/@]*:([^@]+)@", value)
    if m:
        forms.add(m.group(1))
    return {f for f in forms if len(f) >= 6}


def _read_calls(d):
    n = int(open(os.path.join(d, "count")).read().strip() or 0)
    calls = []
    for i in range(1, n + 1):
        raw = open(os.path.join(d, f"call-{i}"), "rb").read().decode()
        argv = raw.split("\0")[:-1]
        stdin_path = os.path.join(d, f"stdin-{i}")
        stdin = open(stdin_path).read() if os.path.exists(stdin_path) else None
        calls.append((i, argv, stdin))
    return calls


def _signature(text):
    """The (kind, name) of every document in a YAML text, or None when it does not parse."""
    try:
        return tuple((d.get("kind"), (d.get("metadata") or {}).get("name"))
                     for d in yaml.load_all(text, Loader=LOADER) if isinstance(d, dict))
    except yaml.YAMLError:
        return None


def _manifest_signatures(root, ns):
    """{(kind, name) of the documents of a manifest file deploy applies: that file}. A Namespace is
    known by the name --namespace gives it."""
    out = {}
    for directory in ("knative", "eventing"):
        base = os.path.join(root, directory)
        for name in sorted(os.listdir(base)):
            if name.endswith(".yaml"):
                sig = _signature(open(os.path.join(base, name)).read())
                if sig:
                    sig = tuple((k, ns if k == "Namespace" else n) for k, n in sig)
                    out[sig] = f"{directory}/{name}"
    return out


def _normalise_real(calls, sigs, env):
    """Recorded calls -> (comparable argv tuples, calls left out as run-time reads)."""
    out, left_out, described = [], [], False
    for _, argv, stdin in calls:
        argv = list(argv)
        if tuple(argv[:3]) == SECRET_READ:
            left_out.append(argv)
            continue
        if argv[:3] == ["kn", "service", "describe"]:
            if described:
                left_out.append(argv)
                continue
            described = True
        if (argv[:3] == ["kubectl", "patch", "configmap"] and "PUBLIC_BASE_URL" in " ".join(argv)
                and not env.get("PUBLIC_BASE_URL")):
            left_out.append(argv)
            continue
        argv = [f"--from-file={PLACEHOLDER_DIR}" if a.startswith("--from-file=") else a for a in argv]
        if stdin is not None:
            if stdin.startswith("apiVersion: v1\nkind: Secret\n"):
                label = "<stdin: the Secret from kubectl create secret>"
            else:
                label = f"<stdin: {sigs.get(_signature(stdin), 'objects of no file in knative/ or eventing/')}>"
            argv = [label if a == "-" else a for a in argv]
        out.append(tuple(argv))
    return out, left_out


def _normalise_dry(text):
    """--dry-run's lines -> comparable argv tuples (a pipeline's sides split; `sed F |` -> F's label)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        argv = shlex.split(line)
        stages, cur = [], []
        for a in argv:
            if a == "|":
                stages.append(cur)
                cur = []
            else:
                cur.append(a)
        stages.append(cur)
        source = None
        for st in stages:
            if st and st[0] == "sed":
                source = f"<stdin: {st[-1]}>"
                continue
            if "-" in st and st[:2] == ["kubectl", "apply"]:
                label = source or "<stdin: the Secret from kubectl create secret>"
                st = [label if a == "-" else a for a in st]
            out.append(tuple(st))
    return out


def _applies(call, path):
    return call[:2] == ("kubectl", "apply") and (path in call or f"<stdin: {path}>" in call)


def _is(call, *prefix):
    return call[:len(prefix)] == prefix


def _waits_for(call, what, condition="Ready"):
    return _is(call, "kubectl", "wait") and what in call and f"--for=condition={condition}" in call


# (name of the earlier step, its test, name of the later step, its test, why the cluster needs it)
ORDER = [
    ("namespace", lambda c: _applies(c, "knative/namespace.yaml"),
     "Secret", lambda c: _is(c, "kubectl", "create", "secret"), "the Secret lives in the namespace"),
    ("namespace", lambda c: _applies(c, "knative/namespace.yaml"),
     "ConfigMap", lambda c: _applies(c, "knative/config.yaml"), "the ConfigMap lives in the namespace"),
    ("ConfigMap", lambda c: _applies(c, "knative/config.yaml"),
     "Job auth-migrate", lambda c: _applies(c, "knative/auth-migrate.yaml"), "the Job's pod reads it"),
    ("RabbitMQ AllReplicasReady", lambda c: _waits_for(c, "rabbitmqcluster/vidmp3-rabbitmq", "AllReplicasReady"),
     "Broker", lambda c: _applies(c, "eventing/broker.yaml"), "the Broker needs a running RabbitMQ"),
    ("ksvc dead-letters", lambda c: _is(c, "kn", "service", "apply", "dead-letters"),
     "Triggers", lambda c: _applies(c, "eventing/triggers.yaml"), "their deadLetterSink refers to it"),
    ("Broker", lambda c: _applies(c, "eventing/broker.yaml"),
     "Triggers", lambda c: _applies(c, "eventing/triggers.yaml"), "Triggers name the Broker"),
    ("Broker Ready", lambda c: _waits_for(c, "broker/default"),
     "SinkBindings", lambda c: _applies(c, "knative/sources.yaml"), "their sink is the Broker's address"),
    ("gateway-sink SinkProvided", lambda c: _waits_for(c, "sinkbinding/gateway-sink", "SinkProvided"),
     "ksvc gateway", lambda c: _is(c, "kn", "service", "apply", "gateway"),
     "the gateway's first revision must start with K_SINK"),
    ("auth-migrate Complete", lambda c: _waits_for(c, "job/auth-migrate", "Complete"),
     "ksvc auth", lambda c: _is(c, "kn", "service", "apply", "auth"), "auth serves from the migrated schema"),
    ("SinkBinding converter-job-sink", lambda c: _applies(c, "knative/sources.yaml"),
     "JobSink", lambda c: _applies(c, "knative/converter-jobsink.yaml"), "its Jobs need K_SINK when created"),
    ("ksvcs Ready", lambda c: _waits_for(c, "ksvc/gateway"),
     "gateway URL read", lambda c: _is(c, "kn", "service", "describe", "gateway"), "the URL exists once Ready"),
]


def _order_violations(calls, with_secret):
    bad = []
    for early_name, early, late_name, late, why in ORDER:
        if late_name == "Secret" and not with_secret:
            continue
        ei = [i for i, c in enumerate(calls) if early(c)]
        li = [i for i, c in enumerate(calls) if late(c)]
        if not ei or not li:
            bad.append(f"{early_name if not ei else late_name}: never run")
        elif min(ei) > min(li):
            bad.append(f"{late_name} (call {min(li) + 1}) before {early_name} (call {min(ei) + 1}): {why}")
    return bad


def _make_stubs(d):
    bindir = os.path.join(d, "bin")
    os.makedirs(bindir)
    for tool, text in (("kubectl", KUBECTL_STUB), ("kn", KN_STUB)):
        path = os.path.join(bindir, tool)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o755)
    return bindir


def _run_deploy(root, d, bindir, args, env_extra, existing, dry_run):
    for name in os.listdir(d):
        if name.startswith(("call-", "stdin-", "created-")):
            p = os.path.join(d, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    shutil.rmtree(os.path.join(d, "existing"), ignore_errors=True)
    if existing is not None:
        os.makedirs(os.path.join(d, "existing"))
        for k, v in existing.items():
            with open(os.path.join(d, "existing", k), "w") as fh:
                fh.write(v)
    with open(os.path.join(d, "count"), "w") as fh:
        fh.write("0\n")
    tmp = os.path.join(d, "tmp")
    os.makedirs(tmp, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in SECRET_KEYS + ("IMAGE", "PUBLIC_BASE_URL", "MAIL_FROM", "KUBECONFIG")}
    env.update(env_extra)
    env.update(PATH=bindir + os.pathsep + os.environ.get("PATH", ""), TMPDIR=tmp,
               CHECK_DEPLOY_STUB_DIR=d, CHECK_DEPLOY_STUB_URL=STUB_URL)
    argv = ["bash", os.path.join(root, "scripts", "deploy")] + (["--dry-run"] if dry_run else []) + args
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    return proc, _read_calls(d)


def check_real_path(root, check, default_image, only=None):
    """Runs every scenario (only=i: the i-th) against `root` (a checkout: scripts/deploy, knative/,
    eventing/); reports through check(ok, what, detail)."""
    with tempfile.TemporaryDirectory(prefix="check-deploy-stubs.") as d:
        bindir = _make_stubs(d)
        for index, (name, args, env, existing) in enumerate(scenarios()):
            if only is not None and index != only:
                continue
            label = f"deploy via stubs [{name}]"
            dry, dry_calls = _run_deploy(root, d, bindir, args, env, existing, dry_run=True)
            if not check(dry.returncode == 0 and not dry_calls, f"{label}: --dry-run runs and calls nothing",
                         f"exit {dry.returncode}, {len(dry_calls)} calls; {dry.stderr.strip()[-300:]}"):
                continue
            proc, calls = _run_deploy(root, d, bindir, args, env, existing, dry_run=False)
            tmp_left = os.listdir(os.path.join(d, "tmp"))
            created = sorted(int(n.split("-")[1]) for n in os.listdir(d)
                             if re.fullmatch(r"created-\d+", n))
            secret_files = {}
            for n in created:
                base = os.path.join(d, f"created-{n}")
                secret_files = {k: open(os.path.join(base, k)).read() for k in sorted(os.listdir(base))}
            modes = {}
            for n in created:
                dir_mode = open(os.path.join(d, f"created-{n}.mode")).read().strip()
                modes = {"<dir>": dir_mode}
                path = os.path.join(d, f"created-{n}.modes")
                for line in (open(path).read().splitlines() if os.path.exists(path) else []):
                    k, _, m = line.partition(" ")
                    modes[k] = m

            if not check(proc.returncode == 0, f"{label}: exits 0",
                         f"exit {proc.returncode}; stderr: {proc.stderr.strip()[-600:]}"):
                continue
            last = proc.stdout.strip().splitlines()[-1:] or [""]
            check(last[0] == f"Gateway URL: {STUB_URL}", f"{label}: prints the gateway URL",
                  f"last stdout line: {last[0]!r}")

            opts = dict(zip(args[::2], args[1::2]))
            image, ns = opts.get("--image", default_image), opts.get("--namespace", DEFAULT_NAMESPACE)
            real, left_out = _normalise_real(calls, _manifest_signatures(root, ns), env)
            expected = _normalise_dry(dry.stdout)
            keeps = existing is not None and not any(k in env for k in SECRET_KEYS)
            if keeps:  # --dry-run cannot know the Secret exists; its `#` line says it is then kept
                expected = [c for c in expected if not _is(c, "kubectl", "create", "secret")
                            and "<stdin: the Secret from kubectl create secret>" not in c]
            if real != expected:
                i = next((k for k, (a, b) in enumerate(zip(real, expected)) if a != b), min(len(real), len(expected)))
                detail = (f"first difference at call {i + 1}: ran {shlex.join(real[i]) if i < len(real) else '(nothing)'}"
                          f" / --dry-run printed {shlex.join(expected[i]) if i < len(expected) else '(nothing)'}"
                          f" ({len(real)} vs {len(expected)} commands)")
            else:
                detail = ""
            check(real == expected, f"{label}: runs exactly what --dry-run prints, in order "
                                    f"({len(real)} commands; {len(left_out)} run-time reads left out)", detail)

            first_change = next((i for i, (_, a, _) in enumerate(calls)
                                 if a[:2] in (["kubectl", "apply"], ["kubectl", "create"], ["kubectl", "delete"],
                                              ["kubectl", "patch"]) or a[:3] == ["kn", "service", "apply"]),
                                len(calls))
            late_reads = [i + 1 for i, (_, a, _) in enumerate(calls) if tuple(a[:3]) == SECRET_READ and i > first_change]
            check(not late_reads, f"{label}: the Secret is read before anything on the cluster changes",
                  f"kubectl get secret at calls {late_reads}, first change at call {first_change + 1}")
            bad = _order_violations(real, with_secret=existing is None or any(k in env for k in SECRET_KEYS))
            check(not bad, f"{label}: steps in the order the cluster needs ({len(ORDER)} constraints)", "; ".join(bad))

            # Secrets: which values, and where they must not be
            if keeps:
                check(not created, f"{label}: the existing Secret is kept (no kubectl create secret)",
                      f"{len(created)} create secret calls")
                values = dict(existing)
            else:
                want = {k: env.get(k) or (existing or {}).get(k) for k in SECRET_KEYS}
                generated = want["JWT_SECRET"] is None
                if generated:
                    want["JWT_SECRET"] = secret_files.get("JWT_SECRET")
                ok_values = (len(created) == 1 and sorted(secret_files) == sorted(SECRET_KEYS)
                             and all(secret_files[k] == want[k] for k in SECRET_KEYS)
                             and len(secret_files.get("JWT_SECRET") or "") >= 32)
                wrong = sorted(k for k in SECRET_KEYS if secret_files.get(k) != want[k])
                check(ok_values, f"{label}: kubectl create secret --from-file gets every key with its value"
                                 + (" (JWT_SECRET generated, >= 32 bytes)" if generated else ""),
                      f"{len(created)} create calls; keys {sorted(secret_files)}; wrong or missing: {wrong}")
                check(modes.get("<dir>") == "700" and all(modes.get(k) == "600" for k in SECRET_KEYS),
                      f"{label}: the secret files are private (dir 0700, files 0600)", str(modes))
                values = {k: v for k, v in want.items() if v}
            check(not tmp_left, f"{label}: the secret temp dir is removed when deploy exits",
                  f"left in TMPDIR: {tmp_left}")
            leaks = []
            for k, v in values.items():
                for form in _secret_forms(v):
                    for n, argv, _ in calls:
                        if any(form in a for a in argv):
                            leaks.append(f"{k} in the argv of call {n} ({argv[0]} {argv[1]} ...)")
                    if form in proc.stdout or form in proc.stderr:
                        leaks.append(f"{k} in deploy's output")
            check(not leaks, f"{label}: no Secret value (nor its base64) on any command line or in the output "
                             f"({len(values)} values, {len(calls)} calls)", "; ".join(sorted(set(leaks))))

            if "--image" in opts or "--namespace" in opts:
                piped = [st for _, a, st in calls if st is not None and not st.startswith("apiVersion: v1\nkind: Secret\n")]
                wrong = []
                for st in piped:
                    docs = [d for d in yaml.load_all(st, Loader=LOADER) if isinstance(d, dict)]
                    for doc in docs:
                        meta = doc.get("metadata") or {}
                        got = meta.get("name") if doc.get("kind") == "Namespace" else meta.get("namespace")
                        if got is not None and got != ns:
                            wrong.append(f"{doc.get('kind')}/{meta.get('name')} in namespace {got}")
                    if re.search(r"image: " + re.escape(default_image) + "$", st, re.M) and image != default_image:
                        wrong.append(f"{[doc.get('kind') for doc in docs]} names the default image")
                    if ns != DEFAULT_NAMESPACE and f".{DEFAULT_NAMESPACE}.svc.cluster.local" in st:
                        wrong.append(f"{[doc.get('kind') for doc in docs]} has a .{DEFAULT_NAMESPACE}.svc.cluster.local address")
                with_image = sum(1 for st in piped if f"image: {image}" in st)
                check(piped and not wrong and (image == default_image or with_image >= 1),
                      f"{label}: the manifests piped to kubectl name --namespace {ns} and --image {image} "
                      f"({len(piped)} piped, {with_image} with the image)", "; ".join(wrong[:4]))
