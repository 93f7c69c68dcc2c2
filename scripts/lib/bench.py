#!/usr/bin/env python3
"""The benchmarks behind scripts/bench (usage and what each measures: see its header).

Every process runs from the release binaries in target/release, on ports 18100-18199, against the shared
services of scripts/services (never stopped here). Results: target/bench/<name>.json and summary.json.
Times come from time.perf_counter_ns() (nanosecond clock; a poll loop sleeps 0.2 ms between attempts, so
exec-to-answer times are good to about 0.3 ms).
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import http.server
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIN = TARGET / "release"
OUT = ROOT / "target" / "bench"
WORK = OUT / "work"
LOGS = OUT / "logs"
MEDIA = Path(os.environ.get("MEDIA_DIR", ROOT / ".cache" / "media"))
SECRET = "bench-secret-bench-secret-bench-secret-0"
USER, PASSWORD = "bench@vidmp3.local", "bench-password-2026"
DB = "vidmp3_bench"
CLIP10 = "mp4_h264_aac_faststart_10s.mp4"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def now_ns():
    return time.perf_counter_ns()


def ms(ns):
    return round(ns / 1e6, 2)


def median(xs):
    return round(statistics.median(xs), 2) if xs else None


def services():
    env = {}
    for line in (ROOT / ".dev" / "services.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip("'\"")
    return env


_next_port = [18100]


def free_port():
    """A port in 18100-18199 that nobody listens on."""
    for _ in range(100):
        port = _next_port[0]
        _next_port[0] = 18100 + (port - 18100 + 1) % 100
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 18100-18199")


def token():
    """An HS256 token as auth would issue it, for the bench user (valid one hour)."""
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "1", "email": USER, "admin": False, "iat": now, "exp": now + 3600,
                           "iss": "vidmp3-auth", "aud": "vidmp3"}).encode())
    sig = b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def request(port, method, path, body=None, headers=None, timeout=60):
    """One HTTP request to 127.0.0.1:port; returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


class Proc:
    """A function (or the runner) started from target/release, logging to target/bench/logs/NAME.log."""

    def __init__(self, name, args, env, port=None):
        self.name, self.port = name, port
        full = {k: v for k, v in os.environ.items() if not k.startswith(("K_", "AWS_LAMBDA"))}
        full.update({"RUST_LOG": "info", "LOG_FORMAT": "json"})
        full.update(env)
        if port is not None:
            full["PORT"] = str(port)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        self.log_file = open(self.log_path, "ab")
        self.t0 = now_ns()
        self.p = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=full, stdin=subprocess.DEVNULL,
                                  stdout=self.log_file, stderr=subprocess.STDOUT)

    def wait_healthy(self, path="/healthz", limit_s=15):
        """Polls until `path` answers 200; returns the perf_counter_ns of that answer."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                status, _, _ = request(self.port, "GET", path, timeout=2)
                if status == 200:
                    return now_ns()
            except OSError:
                pass
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.p.returncode}); see {self.log_path}")
            time.sleep(0.0002)
        raise RuntimeError(f"{self.name} did not answer {path} within {limit_s} s; see {self.log_path}")

    def status(self, field):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def cpu_s(self):
        return cpu_s(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log_file.close()


def cpu_s(pid):
    """User + system CPU seconds of process `pid` so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mongo_server_pid():
    """The pid of the process listening on MONGODB_URI's port (the shared MongoDB-wire server), if visible."""
    port = re.search(r":(\d+)/", services()["MONGODB_URI"]).group(1)
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


class Capture:
    """A CloudEvent receiver (stands in for the Broker's ingress or a sink): records headers and body, 202."""

    def __init__(self):
        self.events = []
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                me.events.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def event_headers(headers):
    """The binary-mode CloudEvent headers of a captured request or reply."""
    return {k: v for k, v in headers.items() if k.lower().startswith("ce-") or k.lower() == "content-type"}


def drop_mongo_database(name):
    python = services().get("VENV", str(ROOT / ".cache" / "venv")) + "/bin/python"
    subprocess.run([python, "-c", "import sys, pymongo; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])",
                    services()["MONGODB_URI"], name], capture_output=True, timeout=60)


def ensure_auth_db():
    """A MySQL database of our own with the bench user (auth migrate + auth user add)."""
    sql = f"CREATE DATABASE IF NOT EXISTS {DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    if subprocess.run(["mysql", "-uroot", "-e", sql], capture_output=True).returncode != 0:
        subprocess.run(["mysql", "-uvidmp3", "-pvidmp3", "-h127.0.0.1", "-e", sql], check=True, capture_output=True)
    env = dict(os.environ, DATABASE_URL=auth_env()["DATABASE_URL"], AUTH_NEW_PASSWORD=PASSWORD)
    subprocess.run([str(BIN / "auth"), "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([str(BIN / "auth"), "user", "add", "--email", USER, "--exists-ok"], env=env, check=True,
                   capture_output=True)


def auth_env():
    return {"DATABASE_URL": f"mysql://vidmp3:vidmp3@127.0.0.1:3306/{DB}", "JWT_SECRET": SECRET}


def gateway_env(auth_port=9, sink=None, database=DB, mode="local"):
    env = {"AUTH_URL": f"http://127.0.0.1:{auth_port}", "MONGODB_URI": services()["MONGODB_URI"],
           "MONGODB_DATABASE": database, "JWT_SECRET": SECRET, "TOKEN_VERIFICATION": mode}
    if sink:
        env["K_SINK"] = sink
    return env


def mongo_env(database=DB):
    return {"MONGODB_URI": services()["MONGODB_URI"], "MONGODB_DATABASE": database}


def notification_env(database=DB, public=""):
    return {**mongo_env(database), "SMTP_URL": services()["SMTP_URL"], "MAIL_FROM": "vidmp3 <no-reply@vidmp3.local>",
            "PUBLIC_BASE_URL": public or "http://127.0.0.1:18199"}


def basic():
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def upload(port, path, name="clip.mp4", bearer=None):
    data = Path(path).read_bytes()
    return request(port, "POST", f"/upload?filename={name}", body=data,
                   headers={"Authorization": f"Bearer {bearer or token()}", "Content-Type": "video/mp4"})


def short_clip():
    """A 1 s H.264/AAC clip for the cold starts (the first request should be about starting, not transcoding)."""
    clip = WORK / "clip1s.mp4"
    if not clip.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=320x240:rate=25:duration=1", "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=48000:duration=1", "-c:v", "libx264", "-preset",
                        "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(clip)], check=True)
    return clip


def until_ok(send, limit_s=15):
    """Repeats `send()` until it answers 2xx; returns (perf_counter_ns, headers, body)."""
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        try:
            status, headers, body = send()
            if 200 <= status < 300:
                return now_ns(), headers, body
            last = f"{status} {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.001)
    raise RuntimeError(f"no successful answer within {limit_s} s: {last}")


# ---------------------------------------------------------------------------------------------------- cold start
def bench_coldstart(args):
    ensure_auth_db()
    clip = short_clip()
    sink = Capture()
    runs = {f: [] for f in ("auth", "gateway", "converter", "notification")}
    try:
        for i in range(args.n):
            pending = len(sink.events)

            def first(name, env, real):
                port = free_port()
                p = Proc(f"coldstart-{name}", [name], env, port)
                try:
                    t_health = p.wait_healthy()
                    t_real, headers, body = until_ok(lambda: real(port))
                    runs[name].append({"healthz_ms": ms(t_health - p.t0), "first_request_ms": ms(t_real - p.t0),
                                       "peak_rss_kib": p.status("VmHWM")})
                    return headers, body
                finally:
                    p.stop()

            first("auth", auth_env(), lambda port: request(port, "POST", "/login", headers={"Authorization": basic()}))
            first("gateway", gateway_env(sink=sink.url()), lambda port: upload(port, clip))
            deadline = time.monotonic() + 10
            while len(sink.events) == pending and time.monotonic() < deadline:
                time.sleep(0.005)
            if len(sink.events) == pending:
                raise RuntimeError("the gateway sent no video.uploaded event")
            ev_headers, ev_body = sink.events[-1]
            reply_headers, reply_body = first(
                "converter", mongo_env(),
                lambda port: request(port, "POST", "/", body=ev_body, headers=event_headers(ev_headers)))
            if "ce-type" not in {k.lower() for k in reply_headers}:
                raise RuntimeError(f"the converter answered no reply event: {reply_headers}")
            first("notification", notification_env(),
                  lambda port: request(port, "POST", "/", body=reply_body, headers=event_headers(reply_headers)))
            log(f"cold start run {i + 1}/{args.n}: " + ", ".join(
                f"{f} {runs[f][-1]['healthz_ms']}/{runs[f][-1]['first_request_ms']} ms" for f in runs))
    finally:
        sink.close()
        drop_mongo_database(DB)
    result = {"runs": args.n, "timer": "time.perf_counter_ns, 0.2 ms poll interval (about 0.3 ms resolution)",
              "start": "t0 just before fork/exec of target/release/<function>; /healthz polled with HTTP/1.1",
              "first_request": {"auth": "POST /login (HTTP Basic, argon2id, MySQL)",
                                "gateway": "POST /upload of a 1 s H.264/AAC clip (GridFS, job, CloudEvent to K_SINK)",
                                "converter": "POST / video.uploaded CloudEvent of that upload (GridFS read, "
                                             "transcode, MP3 stored, reply event)",
                                "notification": "POST / audio.converted reply of the converter (email over SMTP)"},
              "target_healthz_ms": 20, "functions": {}}
    print(f"\n{'cold start (ms, median of ' + str(args.n) + ')':34} {'→ /healthz':>11} {'→ 1st request':>14} {'peak RSS MiB':>13}")
    for f, rs in runs.items():
        h, r = median([x["healthz_ms"] for x in rs]), median([x["first_request_ms"] for x in rs])
        rss = round(statistics.median(x["peak_rss_kib"] for x in rs) / 1024, 1)
        result["functions"][f] = {"healthz_ms": h, "first_request_ms": r, "peak_rss_mib": rss,
                                  "healthz_max_ms": max(x["healthz_ms"] for x in rs), "runs": rs}
        print(f"{f:34} {h:11.1f} {r:14.1f} {rss:13.1f}")
    return result


# ------------------------------------------------------------------------------------------------------ requests
def wrk(url, seconds, bearer):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {bearer}",
                          url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"requests_per_s": round(rps), "p99_ms": round(p99_ms, 2), "requests": total,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else None}


def bench_requests(args):
    if not shutil.which("wrk"):
        log("installing wrk")
        subprocess.run("apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }",
                       shell=True, check=True)
    database = "vidmp3_bench_requests"
    auth = Proc("requests-auth", ["auth"], auth_env(), free_port())
    gws = {}
    try:
        auth.wait_healthy()
        for mode in ("local", "auth"):
            gws[mode] = Proc(f"requests-gateway-{mode}", ["gateway"],
                             gateway_env(auth.port, database=database, mode=mode), free_port())
            gws[mode].wait_healthy()
        bearer = token()
        status, _, body = upload(gws["local"].port, short_clip(), bearer=bearer)
        assert status == 202, body
        job = json.loads(body)["job_id"]
        routes = {"job": f"/jobs/{job}", "no_db": "/jobs?limit=0"}
        for gw in gws.values():  # warm up: MongoDB connection pool, auth connections
            for path in routes.values():
                wrk(f"http://127.0.0.1:{gw.port}{path}", 1, bearer)
        samples = {(m, r): [] for m in gws for r in routes}
        mongo = mongo_server_pid()
        for i in range(args.n):
            for route, path in routes.items():
                for mode, gw in gws.items():
                    procs = [gw] + ([auth] if mode == "auth" else [])
                    cpu0 = [p.cpu_s() for p in procs]
                    mongo0 = cpu_s(mongo) if mongo else 0
                    s = wrk(f"http://127.0.0.1:{gw.port}{path}", args.wrk_seconds, bearer)
                    s["gateway_cpu_s"] = round(procs[0].cpu_s() - cpu0[0], 2)
                    if mode == "auth":
                        s["auth_cpu_s"] = round(procs[1].cpu_s() - cpu0[1], 2)
                    if mongo:
                        s["mongodb_server_cpu_s"] = round(cpu_s(mongo) - mongo0, 2)
                    samples[(mode, route)].append(s)
                    log(f"requests run {i + 1}/{args.n} {route} {mode}: {s['requests_per_s']} req/s, p99 {s['p99_ms']} ms")
    finally:
        for p in [*gws.values(), auth]:
            p.stop()
        drop_mongo_database(database)
    result = {"runs": args.n, "seconds_per_run": args.wrk_seconds, "tool": "wrk -t2 -c64 --latency (on the same 2 cores)",
              "routes": {"job": "GET /jobs/{id}: token check + one MongoDB find (SecantusDB) + JSON",
                         "no_db": "GET /jobs?limit=0: token check, then 400 invalid_limit before any database call"},
              "cpu_s": "CPU seconds each process used during one run (of seconds_per_run on 2 cores)",
              "target_local_requests_per_s": 20000, "results": {}}
    print(f"\n{'requests (64 connections, medians)':40} {'req/s':>9} {'p99 ms':>8} {'non-2xx':>8}"
          f" {'CPU s: gateway':>15} {'auth':>5} {'MongoDB':>8}")
    for (mode, route), ss in samples.items():
        entry = {"requests_per_s": median([s["requests_per_s"] for s in ss]), "p99_ms": median([s["p99_ms"] for s in ss]),
                 **{k: median([s[k] for s in ss if k in s]) for k in ("gateway_cpu_s", "auth_cpu_s", "mongodb_server_cpu_s")},
                 "runs": ss}
        result["results"][f"{route}/{mode}"] = entry
        bad = sum(s["non_2xx"] for s in ss)
        print(f"{route + ', TOKEN_VERIFICATION=' + mode:40} {entry['requests_per_s']:9.0f} {entry['p99_ms']:8.2f} {bad:8}"
              f" {entry['gateway_cpu_s']!s:>15} {entry['auth_cpu_s']!s:>5} {entry['mongodb_server_cpu_s']!s:>8}")
    for route in routes:
        local, remote = result["results"][f"{route}/local"], result["results"][f"{route}/auth"]
        result["results"][f"{route}/ratio_local_over_auth"] = round(local["requests_per_s"] / remote["requests_per_s"], 2)
        print(f"{route}: local ÷ auth throughput {result['results'][f'{route}/ratio_local_over_auth']}")
    return result


# -------------------------------------------------------------------------------------------------------- upload
def bench_upload(args):
    bearer = token()
    results = []
    print(f"\n{'upload':10} {'seconds':>8} {'MiB/s':>8} {'idle RSS MiB':>13} {'peak RSS MiB':>13}")
    for size in args.sizes:
        for i in range(args.upload_runs):
            database = f"vidmp3_bench_upload_{size}"
            gw = Proc(f"upload-gateway-{size}", ["gateway"], gateway_env(database=database), free_port())
            try:
                gw.wait_healthy()
                request(gw.port, "GET", "/jobs", headers={"Authorization": f"Bearer {bearer}"})
                idle = gw.status("VmHWM")
                # Streamed from a pipe (chunked, never on disk), as a raw video/mp4 body.
                cmd = (f"{{ printf '\\x00\\x00\\x00\\x20ftypisom\\x00\\x00\\x02\\x00isomiso2avc1mp41'; "
                       f"head -c {size * 1048576 - 32} /dev/zero; }} | curl -fsS -o /dev/null -X POST -T - "
                       f"-H 'Authorization: Bearer {bearer}' -H 'Content-Type: video/mp4' "
                       f"'http://127.0.0.1:{gw.port}/upload?filename=bench.mp4'")
                t0 = now_ns()
                subprocess.run(cmd, shell=True, check=True)
                secs = (now_ns() - t0) / 1e9
                peak = gw.status("VmHWM")
            finally:
                gw.stop()
                drop_mongo_database(database)
            r = {"size_mib": size, "seconds": round(secs, 2), "mib_per_s": round(size / secs, 1),
                 "idle_rss_kib": idle, "peak_rss_kib": peak}
            results.append(r)
            print(f"{str(size) + ' MiB':10} {r['seconds']:8.1f} {r['mib_per_s']:8.1f} {idle / 1024:13.1f} {peak / 1024:13.1f}")
    summary = {}
    for size in args.sizes:
        rs = [r for r in results if r["size_mib"] == size]
        summary[str(size)] = {"mib_per_s": median([r["mib_per_s"] for r in rs]),
                              "idle_rss_mib": round(statistics.median(r["idle_rss_kib"] for r in rs) / 1024, 1),
                              "peak_rss_mib": round(statistics.median(r["peak_rss_kib"] for r in rs) / 1024, 1)}
    return {"runs_per_size": args.upload_runs, "gateway": "target/release/gateway, a fresh one per run",
            "store": "SecantusDB (MongoDB wire, Python) of scripts/services", "sizes": summary, "runs": results}


# ----------------------------------------------------------------------------------------------------------- e2e
def bench_e2e(args):
    ensure_auth_db()
    clip = MEDIA / CLIP10
    if not clip.exists():
        raise RuntimeError(f"missing {clip}: run scripts/bench convert first (it makes the corpus)")
    env = services()
    database, namespace = "vidmp3_bench_e2e", "vidmp3bench"
    manifests = WORK / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "eventing").glob("*.yaml"):
        (manifests / f.name).write_text(f.read_text().replace("namespace: vidmp3", f"namespace: {namespace}"))
    ports = {n: free_port() for n in ("auth", "gateway", "converter", "notification", "broker")}
    dead = Capture()
    runner_args = ["eventing-runner", "--manifests", str(manifests), "--amqp-url", env["AMQP_URL"]]
    procs = []
    runs = []
    mail_dir = Path(env["MAIL_DIR"])
    try:
        procs.append(Proc("e2e-auth", ["auth"], auth_env(), ports["auth"]))
        procs.append(Proc("e2e-converter", ["converter"], mongo_env(database), ports["converter"]))
        procs.append(Proc("e2e-notification", ["notification"],
                          notification_env(database, f"http://127.0.0.1:{ports['gateway']}"), ports["notification"]))
        procs.append(Proc("e2e-broker", runner_args + [
            "--listen", f"127.0.0.1:{ports['broker']}",
            "--subscriber", f"converter=http://127.0.0.1:{ports['converter']}",
            "--subscriber", f"notification=http://127.0.0.1:{ports['notification']}",
            "--subscriber", f"dead-letters={dead.url()}"], {}, ports["broker"]))
        procs.append(Proc("e2e-gateway", ["gateway"], gateway_env(
            ports["auth"], sink=f"http://127.0.0.1:{ports['broker']}/{namespace}/default", database=database),
            ports["gateway"]))
        for p in procs:
            p.wait_healthy()
        gw = ports["gateway"]
        converter_log = procs[1].log_path
        read = set()  # .eml files already read (the SMTP sink's folder is shared): each is read once

        def mail_about(job):
            for p in mail_dir.glob("*.eml"):
                if p not in read:
                    if job in p.read_text(errors="replace"):
                        return True
                    read.add(p)
            return False
        for i in range(args.n + 1):  # the first run warms every connection and is not counted
            t0 = now_ns()
            status, _, bearer = request(gw, "POST", "/login", headers={"Authorization": basic()})
            assert status == 200, bearer
            bearer = bearer.decode()
            t_login = now_ns()
            status, _, body = upload(gw, clip, CLIP10, bearer)
            assert status == 202, body
            job = json.loads(body)["job_id"]
            t_upload, wall_upload = now_ns(), time.time()
            deadline = time.monotonic() + 120
            while True:
                _, _, body = request(gw, "GET", f"/jobs/{job}", headers={"Authorization": f"Bearer {bearer}"})
                state = json.loads(body)["state"]
                if state in ("converted", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job} still {state} after 120 s")
                time.sleep(0.005)
            t_converted = now_ns()
            if state != "converted":
                raise RuntimeError(f"job {job} failed: {body!r}")
            while not mail_about(job):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no email about job {job}")
                time.sleep(0.005)
            t_email = now_ns()
            # The converter's own log: when it started this job (wall clock) and how long the transcode took.
            lines = {}
            for _ in range(100):
                for line in converter_log.read_text(errors="replace").splitlines():
                    if job in line and line.startswith("{"):
                        entry = json.loads(line)
                        lines.setdefault(entry.get("message"), entry)
                if "conversion started" in lines and "transcoded" in lines:
                    break
                time.sleep(0.01)
            transcode_ms = lines.get("transcoded", {}).get("elapsed_ms")
            started = datetime.datetime.fromisoformat(lines["conversion started"]["timestamp"]).timestamp()
            t_converting = t_upload + int((started - wall_upload) * 1e9)
            r = {"login_ms": ms(t_login - t0), "upload_ms": ms(t_upload - t_login),
                 "upload_to_conversion_start_ms": ms(t_converting - t_login), "converting_ms": ms(t_converted - t_converting),
                 "transcode_ms": transcode_ms, "email_ms": ms(t_email - t_converted),
                 "upload_to_email_ms": ms(t_email - t_login)}
            if transcode_ms is not None:
                r["outside_transcode_share"] = round(1 - transcode_ms / r["upload_to_email_ms"], 3)
            if i:
                runs.append(r)
            log(f"e2e run {i}/{args.n}{' (warm-up)' if not i else ''}: {r}")
    finally:
        for p in reversed(procs):
            p.stop()
        dead.close()
        subprocess.run([str(BIN / runner_args[0]), *runner_args[1:], "--delete-topology"], capture_output=True)
        drop_mongo_database(database)
    keys = ["login_ms", "upload_ms", "upload_to_conversion_start_ms", "converting_ms", "transcode_ms", "email_ms", "upload_to_email_ms",
            "outside_transcode_share"]
    med = {k: median([r[k] for r in runs if r.get(k) is not None]) for k in keys}
    result = {"runs": args.n, "clip": CLIP10, "medians": med, "all": runs,
              "stages": {"upload": "POST /upload sent → answered (video in GridFS, job, event accepted by the Broker)",
                         "upload_to_conversion_start": "POST /upload sent → the converter's 'conversion started' "
                                                       "log line (the upload, Broker, RabbitMQ, Trigger delivery, "
                                                       "job lease; it can start before the client has the 202)",
                         "converting": "conversion started → job seen converted (GET /jobs/{id} polled every 5 ms): "
                                       "spool from GridFS, transcode, MP3 to GridFS, state",
                         "transcode": "the converter's own 'transcoded' log line (elapsed_ms)",
                         "email": "converted → .eml in the SMTP sink's folder (reply event, Broker, notification, SMTP)"}}
    print(f"\n{'end to end, 10 s clip (ms, median of ' + str(args.n) + ')':44}")
    for k in keys:
        print(f"  {k:30} {med[k]}")
    return result


# ------------------------------------------------------------------------------------------------------- convert
def bench_convert(args):
    cmd = [str(ROOT / "scripts" / "bench-convert"), "-n", str(args.n), "--moviepy"]
    if not args.quick:
        cmd.append("--long")
    subprocess.run(cmd, check=True)
    return json.loads((OUT / "convert.json").read_text())


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "ram_gib": round(mem / 1048576, 1), "cpu": cpu, "kernel": platform.release(),
            "os": platform.freedesktop_os_release().get("PRETTY_NAME", "?") if hasattr(platform, "freedesktop_os_release") else "?",
            "commit": commit, "loadavg_at_start": os.getloadavg()}


def report():
    """Markdown tables of the latest target/bench/*.json, for the README's Performance section."""
    load = lambda n: json.loads((OUT / f"{n}.json").read_text()) if (OUT / f"{n}.json").exists() else None
    if not (OUT / "summary.json").exists():
        sys.exit("no results yet: run scripts/bench first")
    m = json.loads((OUT / "summary.json").read_text())["machine"]
    print(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['os']}, kernel {m['kernel']}; "
          f"load average {m['loadavg_at_start'][0]:.1f} at the start; commit {m['commit']}.\n")
    c = load("convert")
    if c:
        print(f"Conversion (medians of {c['runs_per_tool']}; CPU = user+sys of /usr/bin/time -v, 10 ms resolution):\n")
        print("| file | CPU ours ÷ CLI | wall ours ÷ CLI | CPU ours ÷ moviepy | wall ours ÷ moviepy "
              "| ours CPU / wall s | peak RSS ours / CLI / moviepy MiB |")
        print("|---|---|---|---|---|---|---|")
        for f, e in c["files"].items():
            rc, rm = e.get("ratio_ours_over_cli", {}), e.get("ratio_ours_over_moviepy", {})
            rss = " / ".join(f"{e[t]['peak_rss_mib']:.0f}" for t in ("ours", "cli", "moviepy") if t in e)
            print(f"| {f} | {rc.get('cpu')} | {rc.get('wall')} | {rm.get('cpu')} | {rm.get('wall')} "
                  f"| {e['ours']['cpu_s']} / {e['ours']['wall_s']} | {rss} |")
        print()
    cs = load("coldstart")
    if cs:
        print(f"Cold start (medians of {cs['runs']}, ms from exec):\n")
        print("| function | → 200 on /healthz | → first real request | that request | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for f, e in cs["functions"].items():
            print(f"| {f} | {e['healthz_ms']} (max {e['healthz_max_ms']}) | {e['first_request_ms']} "
                  f"| {cs['first_request'][f]} | {e['peak_rss_mib']} |")
        print()
    r = load("requests")
    if r:
        print(f"Requests (wrk -t2 -c64, {r['seconds_per_run']} s runs, medians of {r['runs']}; CPU s used in one run):\n")
        print("| route | token check | req/s | p99 ms | CPU s gateway / auth / MongoDB server |")
        print("|---|---|---|---|---|")
        for route in ("job", "no_db"):
            for mode in ("local", "auth"):
                e = r["results"][f"{route}/{mode}"]
                label = "`GET /jobs/{id}`" if route == "job" else "`GET /jobs?limit=0` (400 before the DB)"
                cpu = " / ".join(str(e.get(k) if e.get(k) is not None else "–")
                                 for k in ("gateway_cpu_s", "auth_cpu_s", "mongodb_server_cpu_s"))
                print(f"| {label} | `{mode}` | {e['requests_per_s']:.0f} | {e['p99_ms']} | {cpu} |")
        print()
    u = load("upload")
    if u:
        print("| upload | MiB/s | gateway idle RSS MiB | peak RSS MiB |")
        print("|---|---|---|---|")
        for size, e in u["sizes"].items():
            print(f"| {size} MiB | {e['mib_per_s']} | {e['idle_rss_mib']} | {e['peak_rss_mib']} |")
        print()
    e = load("e2e")
    if e:
        med = e["medians"]
        print(f"End to end, 10 s clip (medians of {e['runs']}, ms): " + ", ".join(f"{k} {v}" for k, v in med.items()))


BENCHES = {"convert": bench_convert, "coldstart": bench_coldstart, "requests": bench_requests,
           "upload": bench_upload, "e2e": bench_e2e}


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench")
    ap.add_argument("what", nargs="*", default=["all"], choices=[*BENCHES, "all", "report"])
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    args = ap.parse_args()
    if args.what == ["report"]:
        return report()
    what = list(BENCHES) if "all" in args.what else list(dict.fromkeys(args.what))
    args.n = args.n or (1 if args.quick else 3)
    args.wrk_seconds = 2 if args.quick else 5
    args.sizes = args.sizes or ([100] if args.quick else [100, 1024])
    args.upload_runs = 1 if args.quick else min(args.n, 2)
    OUT.mkdir(parents=True, exist_ok=True)
    summary_path = OUT / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary["machine"] = machine()
    summary.setdefault("benchmarks", {})
    started = time.monotonic()
    failed = []
    for name in what:
        log(f"== {name}")
        t = time.monotonic()
        try:
            result = BENCHES[name](args)
        except Exception as e:  # one broken benchmark should not lose the others' figures
            log(f"{name} failed: {e}")
            failed.append(name)
            continue
        result["seconds"] = round(time.monotonic() - t, 1)
        result["quick"] = args.quick
        result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        summary["benchmarks"][name] = {k: v for k, v in result.items() if k not in ("runs", "all", "files")} \
            if name != "convert" else {f: {k: v for k, v in e.items() if k.startswith("ratio")} | {
                t: {k: e[t][k] for k in ("cpu_s", "wall_s", "peak_rss_mib")} for t in ("ours", "cli", "moviepy") if t in e}
                for f, e in result["files"].items()}
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"done in {time.monotonic() - started:.0f} s; JSON in {OUT}/")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
