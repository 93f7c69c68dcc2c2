"""scripts/check-deploy's self-test: the checks must catch a broken deploy, one change at a time.

Copies what check-deploy reads (knative/, eventing/*.yaml and eventing/schemas/, scripts/deploy,
scripts/lib/usage.sh, the Dockerfile) into a temp dir, runs the same checks there (not
validate-manifests, which is not ours) and requires 0 failures. Then, for each MUTATION, it runs them
again on a fresh copy with that one change and requires a FAIL line containing the mutation's
`expect` text, so the check meant to catch it is the one that did (any FAIL is not enough).
Mutations of the deploy script's real path also run the first scenario of
scripts/lib/check_deploy_realpath.py.

Kinds of mutation: a manifest alone (the kn flags no longer agree), a flag alone (the same, seen from
the other side), a manifest and its flag together (they agree, so only a policy check can catch it),
and the deploy script's real path (secrets, order, cleanup, the printed URL).
"""
import concurrent.futures
import multiprocessing
import os
import re
import shutil
import tempfile

import yaml


class MutationError(Exception):
    """The text or object a mutation changes is not in the copy (the manifests moved on)."""


def _path(root, rel):
    return os.path.join(root, rel)


def edit_text(rel, old, new, count=1):
    """A mutation replacing `old` (which must occur exactly `count` times) with `new` in file rel."""
    def apply(root):
        text = open(_path(root, rel)).read()
        if text.count(old) != count:
            raise MutationError(f"{rel}: {old!r} occurs {text.count(old)} times, not {count}")
        with open(_path(root, rel), "w") as fh:
            fh.write(text.replace(old, new))
    return apply


def edit_yaml(rel, kind, name, change):
    """A mutation calling change(doc) on the document kind/name of file rel (rewritten as YAML)."""
    def apply(root):
        docs = list(yaml.load_all(open(_path(root, rel)), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        hits = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind
                and (d.get("metadata") or {}).get("name") == name]
        if len(hits) != 1:
            raise MutationError(f"{rel}: {len(hits)} documents {kind}/{name}")
        try:
            change(hits[0])
        except (KeyError, IndexError, TypeError) as err:
            raise MutationError(f"{rel} {kind}/{name}: {err!r}") from err
        with open(_path(root, rel), "w") as fh:
            yaml.dump_all([d for d in docs if d is not None], fh, sort_keys=False,
                          Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
    return apply


def both(*mutations):
    def apply(root):
        for m in mutations:
            m(root)
    return apply


def _c(doc):
    return doc["spec"]["template"]["spec"]["containers"][0]


def _ann(doc):
    return doc["spec"]["template"]["metadata"]["annotations"]


def _set(getter, key, value):
    def change(doc):
        target = getter(doc)
        if key not in target:
            raise KeyError(key)
        target[key] = value
    return change


def _env(name, new_name=None, key=None):
    def change(doc):
        for e in _c(doc)["env"]:
            if e["name"] == name:
                if new_name:
                    e["name"] = new_name
                if key:
                    e["valueFrom"]["secretKeyRef"]["key"] = key
                return
        raise KeyError(name)
    return change


def _label(doc, value):
    labels = doc["metadata"].setdefault("labels", {})
    if value is None:
        del labels["networking.knative.dev/visibility"]
    else:
        labels["networking.knative.dev/visibility"] = value


def _trigger(doc):
    return doc["spec"]


KSVC = "Service"


class M:
    """A mutation: what it breaks, text of the FAIL line that must catch it, how to apply it;
    realpath: also run the stub scenario; twice: run --dry-run twice; needs: a key of run()'s
    `unavailable` (a check that may be skipped on this machine)."""
    def __init__(self, what, expect, apply, realpath=False, twice=False, needs=None):
        self.what, self.expect, self.apply = what, expect, apply
        self.realpath, self.twice, self.needs = realpath, twice, needs


MUTATIONS = [
    # the manifest alone: the kn flags no longer agree with it
    M("knative/gateway.yaml names another image", "kn service apply gateway: --image matches",
      edit_yaml("knative/gateway.yaml", KSVC, "gateway", lambda d: _c(d).update(image="registry.example.com/vidmp3:0.0.9"))),
    M("knative/converter.yaml max-scale 10 -> 12", "kn service apply converter: scale bound max-scale",
      edit_yaml("knative/converter.yaml", KSVC, "converter", _set(_ann, "autoscaling.knative.dev/max-scale", "12"))),
    M("knative/notification.yaml loses its cluster-local label", "kn service apply notification: visibility matches",
      edit_yaml("knative/notification.yaml", KSVC, "notification", lambda d: _label(d, None))),
    M("knative/auth.yaml env JWT_SECRET renamed JWT_KEY", "kn service apply auth: env names",
      edit_yaml("knative/auth.yaml", KSVC, "auth", _env("JWT_SECRET", new_name="JWT_KEY"))),
    M("knative/gateway.yaml MONGODB_URI from secret key MONGO_URI", "kn service apply gateway: --env-value-from",
      edit_yaml("knative/gateway.yaml", KSVC, "gateway", _env("MONGODB_URI", key="MONGO_URI"))),
    M("knative/converter.yaml readiness probe path /ready", "kn service apply converter: readiness probe matches",
      edit_yaml("knative/converter.yaml", KSVC, "converter",
                lambda d: _c(d)["readinessProbe"]["httpGet"].update(path="/ready"))),
    M("knative/gateway.yaml containerConcurrency 100 -> 50", "kn service apply gateway: --concurrency-limit",
      edit_yaml("knative/gateway.yaml", KSVC, "gateway", _set(lambda d: d["spec"]["template"]["spec"],
                                                             "containerConcurrency", 50))),
    M("knative/auth.yaml timeoutSeconds 30 -> 45", "kn service apply auth: --timeout / timeoutSeconds",
      edit_yaml("knative/auth.yaml", KSVC, "auth", _set(lambda d: d["spec"]["template"]["spec"], "timeoutSeconds", 45))),
    M("knative/notification.yaml memory limit 256Mi -> 512Mi", "kn service apply notification: --limit matches",
      edit_yaml("knative/notification.yaml", KSVC, "notification",
                _set(lambda d: _c(d)["resources"]["limits"], "memory", "512Mi"))),
    # the flag alone
    M("deploy: gateway --scale-min 0 -> 1", "kn service apply gateway: scale bound min-scale",
      edit_text("scripts/deploy", "--scale-min 0 --scale-max 10 --scale-target 50",
                "--scale-min 1 --scale-max 10 --scale-target 50")),
    M("deploy: converter --cluster-local -> --no-cluster-local", "kn service apply converter: visibility matches",
      edit_text("scripts/deploy", "--timeout 600 --cluster-local", "--timeout 600 --no-cluster-local")),
    M("deploy: notification's kn service apply dropped", "every Knative Service in knative/ is deployed",
      edit_text("scripts/deploy", "  deploy_notification\n", "")),
    M("deploy: auth gets --scale-window 60s (a flag nothing compares)",
      "kn service apply auth: every flag is one this check compares",
      edit_text("scripts/deploy", "--scale-min 0 --scale-max 3 --scale-target 6",
                "--scale-min 0 --scale-max 3 --scale-target 6 --scale-window 60s")),
    # manifest and flag changed together: they agree, only a policy check can object
    M("auth min-scale \"1\" in knative/auth.yaml and deploy", "policy: every ksvc scales to zero",
      both(edit_yaml("knative/auth.yaml", KSVC, "auth", _set(_ann, "autoscaling.knative.dev/min-scale", "1")),
           edit_text("scripts/deploy", "--scale-min 0 --scale-max 3 --scale-target 6",
                     "--scale-min 1 --scale-max 3 --scale-target 6"))),
    M("gateway cluster-local in knative/gateway.yaml and deploy", "policy: the gateway is the only public ksvc",
      both(edit_yaml("knative/gateway.yaml", KSVC, "gateway", lambda d: _label(d, "cluster-local")),
           edit_text("scripts/deploy", "--no-cluster-local", "--cluster-local"))),
    M("notification public in knative/notification.yaml and deploy", "policy: the gateway is the only public ksvc",
      both(edit_yaml("knative/notification.yaml", KSVC, "notification", lambda d: _label(d, None)),
           edit_text("scripts/deploy", "--concurrency-limit 20 --timeout 60 --cluster-local",
                     "--concurrency-limit 20 --timeout 60 --no-cluster-local"))),
    M("liveness probe /livez in auth/gateway/notification manifests and deploy's PROBES_DEFAULT",
      "policy: every function's readiness probe is GET /readyz and its liveness probe GET /healthz",
      both(*[edit_yaml(f"knative/{n}.yaml", KSVC, n, lambda d: _c(d)["livenessProbe"]["httpGet"].update(path="/livez"))
             for n in ("auth", "gateway", "notification")],
           edit_text("scripts/deploy", "--probe-readiness http:::/readyz --probe-liveness http:::/healthz\n                --probe-liveness-opts",
                     "--probe-readiness http:::/readyz --probe-liveness http:::/livez\n                --probe-liveness-opts"))),
    M("Dockerfile: --bin notification dropped", "policy: the Dockerfile builds every workspace binary",
      edit_text("Dockerfile", "--bin converter --bin notification", "--bin converter")),
    M("Dockerfile: the ldd gate skips the converter", "ldd gate checks each",
      edit_text("Dockerfile", "/usr/local/bin/gateway /usr/local/bin/converter \\",
                "/usr/local/bin/gateway \\")),
    M("Dockerfile: the runtime stage no longer installs libswresample4",
      "installs the package of every library the binaries link",
      edit_text("Dockerfile", "libavutil57 libswresample4 ", "libavutil57 "), needs="runtime-libs"),
    M("converter runs /usr/local/bin/convert in knative/converter.yaml and deploy",
      "policy: every binary the manifests and kn --cmd run is in the image",
      both(edit_yaml("knative/converter.yaml", KSVC, "converter", lambda d: _c(d).update(command=["/usr/local/bin/convert"])),
           edit_text("scripts/deploy", "--cmd /usr/local/bin/converter", "--cmd /usr/local/bin/convert"))),
    M("converter cpu 2 (request and limit, file and flags) with containerConcurrency 1",
      "converter: containerConcurrency = CONVERT_CONCURRENCY = CPU request = CPU limit",
      both(edit_yaml("knative/converter.yaml", KSVC, "converter",
                     lambda d: (_c(d)["resources"]["requests"].update(cpu=2), _c(d)["resources"]["limits"].update(cpu=2))),
           edit_text("scripts/deploy", "--request cpu=1,memory=512Mi --limit cpu=1,memory=1Gi",
                     "--request cpu=2,memory=512Mi --limit cpu=2,memory=1Gi"))),
    # eventing plumbing
    M("knative/sources.yaml: gateway-sink binds auth instead of the gateway",
      "policy: a SinkBinding gives the gateway ksvc K_SINK",
      edit_yaml("knative/sources.yaml", "SinkBinding", "gateway-sink", lambda d: d["spec"]["subject"].update(name="auth"))),
    M("knative/converter-jobsink.yaml: the Jobs' label no longer matches the SinkBinding",
      "policy: a SinkBinding gives the Jobs of JobSink converter-job K_SINK",
      edit_yaml("knative/converter-jobsink.yaml", "JobSink", "converter-job",
                lambda d: d["spec"]["job"]["metadata"]["labels"].update({"app.kubernetes.io/name": "convert-job"}))),
    M("knative/sources.yaml: the PingSource POSTs to /internal/redelivery",
      "policy: a PingSource POSTs to the gateway's /internal/redeliver",
      edit_yaml("knative/sources.yaml", "PingSource", "gateway-redeliver", lambda d: d["spec"]["sink"].update(uri="/internal/redelivery"))),
    M("eventing/triggers.yaml: the converter's Trigger filters on dev.vidmp3.video.upload (typo)",
      "policy: every Trigger filters",
      edit_yaml("eventing/triggers.yaml", "Trigger", "converter-on-video-uploaded",
                lambda d: _trigger(d)["filter"]["attributes"].update(type="dev.vidmp3.video.upload"))),
    M("eventing/triggers.yaml: audio.converted delivered to the converter", "policy: Triggers route",
      edit_yaml("eventing/triggers.yaml", "Trigger", "notification-on-audio-converted",
                lambda d: _trigger(d)["subscriber"]["ref"].update(name="converter"))),
    M("knative/rabbitmq.yaml: consumer_timeout 3600000 -> 3000000",
      "Trigger converter-on-video-uploaded: worst-case delivery",
      edit_text("knative/rabbitmq.yaml", "consumer_timeout = 3600000", "consumer_timeout = 3000000")),
    M("eventing/triggers.yaml: the converter's Trigger retries 5 times, not 3",
      "Trigger converter-on-video-uploaded: worst-case delivery",
      edit_yaml("eventing/triggers.yaml", "Trigger", "converter-on-video-uploaded",
                _set(lambda d: d["spec"]["delivery"], "retry", 5))),
    # the deploy script's run-time behaviour
    M("deploy --dry-run prints a mktemp path again", "prints the same commands on every run",
      edit_text("scripts/deploy", "SECRET_DIR=$SECRET_DIR_PLACEHOLDER",
                "SECRET_DIR=$(mktemp -d \"${TMPDIR:-/tmp}/vidmp3-secrets.XXXXXX\")"), twice=True),
    M("deploy: JWT_SECRET passed to kubectl with --from-literal", "no Secret value (nor its base64) on any command line",
      edit_text("scripts/deploy", '--from-file="$SECRET_DIR"',
                '--from-literal=JWT_SECRET="$(cat "$SECRET_DIR/JWT_SECRET" 2>/dev/null)" --from-file="$SECRET_DIR"'),
      realpath=True),
    M("deploy: the functions before the SinkBindings", "steps in the order the cluster needs",
      edit_text("scripts/deploy", "step_sources\nstep_migrate\nstep_functions\n",
                "step_migrate\nstep_functions\nstep_sources\n"), realpath=True),
    M("deploy: the secret dir is 0755", "the secret files are private",
      edit_text("scripts/deploy", 'chmod 700 "$SECRET_DIR"', 'chmod 755 "$SECRET_DIR"'), realpath=True),
    M("deploy: no cleanup trap", "the secret temp dir is removed",
      edit_text("scripts/deploy", "trap cleanup EXIT\n", ""), realpath=True),
    M("deploy: the real path skips the wait for the Broker", "runs exactly what --dry-run prints",
      edit_text("scripts/deploy", '  run kubectl wait --namespace "$NS" --for=condition=Ready broker/default',
                '  [[ $DRY_RUN == 0 ]] || run kubectl wait --namespace "$NS" --for=condition=Ready broker/default'),
      realpath=True),
    M("deploy: --namespace is not written into piped manifests", "the manifests piped to kubectl name --namespace",
      edit_text("scripts/deploy", 'exprs+=(-e "s|namespace: ${DEFAULT_NAMESPACE}\\$|namespace: ${NS}|"',
                'exprs+=(-e "s|namespace: ${DEFAULT_NAMESPACE}\\$|namespace: ${DEFAULT_NAMESPACE}|"'), realpath=True),
    M("deploy: --image is not written into piped manifests", "the manifests piped to kubectl name --namespace",
      edit_text("scripts/deploy", 'exprs+=(-e "s|image: ${DEFAULT_IMAGE}\\$|image: ${IMAGE}|")',
                'exprs+=(-e "s|image: ${DEFAULT_IMAGE}\\$|image: ${DEFAULT_IMAGE}|")'), realpath=True),
    M("deploy: the gateway URL is not printed", "prints the gateway URL",
      edit_text("scripts/deploy", 'echo "Gateway URL: $GATEWAY_URL"', 'echo "Gateway: ready"'), realpath=True),
]


def make_copy(src, dst):
    """What check-deploy reads, from checkout src into dst."""
    shutil.copytree(os.path.join(src, "knative"), os.path.join(dst, "knative"))
    os.makedirs(os.path.join(dst, "eventing"))
    for name in os.listdir(os.path.join(src, "eventing")):
        if name.endswith(".yaml"):
            shutil.copy2(os.path.join(src, "eventing", name), os.path.join(dst, "eventing", name))
    if os.path.isdir(os.path.join(src, "eventing", "schemas")):
        shutil.copytree(os.path.join(src, "eventing", "schemas"), os.path.join(dst, "eventing", "schemas"))
    os.makedirs(os.path.join(dst, "scripts", "lib"))
    shutil.copy2(os.path.join(src, "scripts", "deploy"), os.path.join(dst, "scripts", "deploy"))
    shutil.copy2(os.path.join(src, "scripts", "lib", "usage.sh"), os.path.join(dst, "scripts", "lib", "usage.sh"))
    shutil.copy2(os.path.join(src, "Dockerfile"), os.path.join(dst, "Dockerfile"))


def _short(line, n=140):
    line = line[len("FAIL "):] if line.startswith("FAIL ") else line
    line = re.sub(r"^deploy via stubs \[[^\]]*\]", "deploy via stubs", line)
    return line if len(line) <= n else line[:n - 3] + "..."


_CTX = {}  # what a forked worker needs (set before the pool forks; lambdas do not pickle)


def _mutated_run(i):
    """Runs mutation i on a fresh copy of the base: (i, error or None, failed count, FAIL lines)."""
    m, base, tmp = MUTATIONS[i], _CTX["base"], _CTX["tmp"]
    work = os.path.join(tmp, f"m{i}")
    shutil.copytree(base, work)
    try:
        m.apply(work)
    except MutationError as err:
        return i, str(err), 0, []
    with _CTX["isolated"]() as res:
        _CTX["suite"](work, twice=m.twice, cache=_CTX["cache"])
        if m.realpath:
            _CTX["real_path"](work, 0)
    shutil.rmtree(work, ignore_errors=True)
    return i, None, res["failed"], [ln for ln in res["output"].splitlines() if ln.startswith("FAIL")]


def run(src, check, isolated, suite, real_path, unavailable=None):
    """suite(root, twice, cache) runs the comparison and policy checks on root; real_path(root, only)
    the stub scenarios (only=index: that one); isolated() gives them their own counts and output.
    Mutations run in forked workers, one per CPU (at most 4); results are reported in order.
    unavailable: {needs key: why that check is skipped here, or None}; such mutations are skipped
    with a note (not counted)."""
    cache = {}  # deploy --dry-run's result, per version of its inputs (most mutations leave them alone)
    with tempfile.TemporaryDirectory(prefix="check-deploy-selftest.") as tmp:
        base = os.path.join(tmp, "base")
        make_copy(src, base)
        with isolated() as res:
            suite(base, twice=True, cache=cache)
            real_path(base, 0)
        fails = [ln for ln in res["output"].splitlines() if ln.startswith("FAIL")]
        if not check(res["failed"] == 0 and res["passed"] > 0,
                     f"self-test: the unmutated copy passes ({res['passed']} checks)", "; ".join(fails[:3])):
            return
        _CTX.update(base=base, tmp=tmp, isolated=isolated, suite=suite, real_path=real_path, cache=cache)
        workers = max(1, min(4, os.cpu_count() or 1))
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                results = list(pool.map(_mutated_run, range(len(MUTATIONS))))
        else:
            results = [_mutated_run(i) for i in range(len(MUTATIONS))]
        for i, error, _, fails in results:
            m = MUTATIONS[i]
            if m.needs and (unavailable or {}).get(m.needs):
                print(f"     skip self-test: {m.what} ({unavailable[m.needs]})")
                continue
            if error is not None:
                check(False, f"self-test: {m.what}: the mutation applies", error)
                continue
            hit = [ln for ln in fails if m.expect in ln]
            check(bool(hit), f"self-test: {m.what} -> " + (_short(hit[0]) if hit else "not caught"),
                  f"no FAIL line contains {m.expect!r}; FAIL lines: {[_short(f) for f in fails[:3]]}")
