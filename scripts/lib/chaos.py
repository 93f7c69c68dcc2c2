#!/usr/bin/env python3
"""The chaos run of scripts/chaos: the dev stack over private RabbitMQ, MongoDB-wire and SMTP processes,
100 uploads while those break, then counts of what came out.

usage: chaos.py --root ROOT --bin DIR [--uploads N] [--wait S]

Everything runs on 127.0.0.1 ports 18200-18299 with its data under ROOT/.dev/chaos/ (wiped at start), so
it runs beside a dev stack; MariaDB is the machine's (3306) with its own database `vidmp3_chaos`.
Runs with the services venv's python (pymongo comes with SecantusDB).

Faults, while the uploads go on (seconds from the first upload):
  t=6   RabbitMQ restarted (SIGTERM, start again on the same data)         (1/2)
  t=15  converter SIGKILLed while a job is `converting`, started again 2 s later
  t=28  MongoDB stopped for 10 s, started again on the same data dir
  t=45  SMTP server down for 30 s
  t=60  RabbitMQ restarted                                                 (2/2)

The client is a real client: an upload answered 503 (or whose connection broke before an answer) is sent
again after a short pause, up to 30 times. Such an upload is not lost: it never got a 202.
"""
import argparse
import base64
import email
import email.policy
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pymongo

PORTS = {
    "amqp": 18201,
    "rabbit_dist": 18202,
    "mongo": 18203,
    "smtp": 18204,
    "gateway": 18210,
    "auth": 18211,
    "converter": 18213,
    "notification": 18214,
    "broker": 18220,
    "dead-letters": 18221,
}
DB = "vidmp3_chaos"
EMAIL = "chaos@vidmp3.local"
PASSWORD = "chaos-password-2026"
# The corpus's 10 s clips that convert (../shared/media-cases.json).
CLIPS = [
    "mp4_h264_aac_faststart_10s.mp4",
    "mp4_h264_aac_moov_at_end_10s.mp4",
    "mkv_vp9_opus_10s.mkv",
    "webm_vp8_vorbis_10s.webm",
    "mov_h264_pcm_s16le_10s.mov",
    "avi_mpeg4_mp3_10s.avi",
    "flv_h264_aac_10s.flv",
    "ts_h264_aac_10s.ts",
    "3gp_h263_aac_mono_10s.3gp",
    "m4a_aac_audio_only_10s.m4a",
    "mp4_h264_aac_5.1_surround_10s.mp4",
    "mp4_h264_aac_8khz_mono_10s.mp4",
    "mkv_h264_pcm_s24le_96khz_10s.mkv",
    "mkv_h264_two_audio_tracks_eng_spa_10s.mkv",
    "mp4_h264_aac_vfr_10s.mp4",
    "mp4_h264_aac_tagged_title_artist_10s.mp4",
]

T0 = time.monotonic()


def log(msg):
    print(f"chaos: [{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_port(port, secs, name, proc=None, closed=False):
    deadline = time.monotonic() + secs
    while port_open(port) == closed:
        if proc is not None and proc.poll() is not None and not closed:
            raise SystemExit(f"chaos: {name} exited at start (status {proc.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"chaos: {name} did not {'close' if closed else 'open'} port {port} in {secs}s")
        time.sleep(0.1)


class Proc:
    """A process in its own session, restartable, that knows whether the script stopped it."""

    def __init__(self, name, argv, port, env=None, cwd=None, log_dir=None, health=None):
        self.name, self.argv, self.port, self.env, self.cwd = name, argv, port, env, cwd
        self.log_path = Path(log_dir) / f"{name}.log"
        self.health = health
        self.popen = None
        self.stopping = False  # the script is stopping it: its exit is expected
        self.unexpected_deaths = []
        self.starts = 0

    def start(self, timeout=60):
        self.stopping = False
        out = open(self.log_path, "ab")
        out.write(f"=== {time.strftime('%H:%M:%S')} start\n".encode())
        out.flush()
        self.popen = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True,
        )
        out.close()
        self.starts += 1
        wait_port(self.port, timeout, self.name, self.popen)
        if self.health:
            deadline = time.monotonic() + timeout
            while not http_ok(self.health):
                if time.monotonic() > deadline:
                    raise SystemExit(f"chaos: {self.name} does not answer {self.health}")
                time.sleep(0.1)

    def send_signal(self, sig):
        if self.popen and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, sig=signal.SIGTERM, grace=20):
        self.stopping = True
        if not self.popen:
            return
        self.send_signal(sig)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            self.popen.wait(10)
        wait_port(self.port, 30, self.name, closed=True)

    def check(self):
        """Called by the watcher: a process that died without being stopped is restarted (by hand)."""
        if self.popen and not self.stopping and self.popen.poll() is not None:
            log(f"!! {self.name} died on its own (status {self.popen.returncode}): restarting it")
            self.unexpected_deaths.append(self.popen.returncode)
            self.start()


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def request(method, url, data=None, headers=None, timeout=60):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--uploads", type=int, default=100)
    ap.add_argument("--wait", type=int, default=420, help="bound on the wait after the last upload, seconds")
    ap.add_argument("--media", default=None)
    args = ap.parse_args()
    root = Path(args.root)
    binp = Path(args.bin)
    media = Path(args.media or root / ".cache/media")
    venv = Path(sys.executable).parent
    chaos = root / ".dev/chaos"
    out_dir = root / "target/chaos"
    for p in PORTS.values():
        if port_open(p):
            raise SystemExit(f"chaos: port {p} is taken (another chaos run? scripts/chaos cleans up on exit)")
    if chaos.exists():
        shutil.rmtree(chaos)
    logs = chaos / "log"
    for d in ("log", "rabbit", "mongo/data", "mail", "dead-letters", "tmp"):
        (chaos / d).mkdir(parents=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for clip in CLIPS:
        if not (media / clip).is_file():
            raise SystemExit(f"chaos: {media / clip} is missing (run ../shared/scripts/make-media {media})")

    procs = {}
    started = time.time()

    # --- services of our own -------------------------------------------------------------------------------
    rd = chaos / "rabbit"
    (rd / "enabled_plugins").write_text("[].\n")
    (rd / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{PORTS['amqp']}\nlog.console = false\n")
    (rd / "rabbitmq-env.conf").write_text("")
    renv = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    renv.update({
        "HOME": str(rd), "RABBITMQ_NODENAME": "vidmp3-chaos@localhost", "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(PORTS["amqp"]), "RABBITMQ_DIST_PORT": str(PORTS["rabbit_dist"]),
        "RABBITMQ_MNESIA_BASE": str(rd / "mnesia"), "RABBITMQ_LOG_BASE": str(rd / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(rd / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(rd / "rabbitmq.conf"), "RABBITMQ_ADVANCED_CONFIG_FILE": str(rd / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(rd / "rabbitmq-env.conf"), "ERL_EPMD_ADDRESS": "127.0.0.1",
    })
    rabbit_bin = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.path.exists(rabbit_bin):
        rabbit_bin = shutil.which("rabbitmq-server")
    procs["rabbitmq"] = Proc("rabbitmq", [rabbit_bin], PORTS["amqp"], env=renv, cwd=rd, log_dir=logs)
    procs["mongodb"] = Proc("mongodb", [str(venv / "secantusd-py"), "--host", "127.0.0.1", "--port", str(PORTS["mongo"]),
                                        "--storage-path", str(chaos / "mongo/data")], PORTS["mongo"], cwd=chaos / "mongo", log_dir=logs)
    procs["smtp"] = Proc("smtp", [sys.executable, str(root / "scripts/lib/smtp_sink.py"), "--host", "127.0.0.1",
                                  "--port", str(PORTS["smtp"]), "--maildir", str(chaos / "mail")], PORTS["smtp"], cwd=chaos, log_dir=logs)
    procs["dead-letters"] = Proc("dead-letters", [sys.executable, str(root / "scripts/lib/dead_letters.py"), "--port",
                                                  str(PORTS["dead-letters"]), "--dir", str(chaos / "dead-letters")],
                                 PORTS["dead-letters"], cwd=chaos, log_dir=logs)
    watcher_stop = threading.Event()
    try:
        for name in ("rabbitmq", "mongodb", "smtp", "dead-letters"):
            procs[name].start(timeout=120)
        log("RabbitMQ :%d, MongoDB wire :%d, SMTP :%d up" % (PORTS["amqp"], PORTS["mongo"], PORTS["smtp"]))

        # --- MariaDB database and user (the machine's server, our own database) -----------------------------
        subprocess.run(["mysql", "-h127.0.0.1", "-uvidmp3", "-pvidmp3", "-e",
                        f"DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"],
                       check=True, stdin=subprocess.DEVNULL)
        mongo_uri = f"mongodb://127.0.0.1:{PORTS['mongo']}/?directConnection=true"
        env = dict(os.environ)
        env.update({
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            "MONGODB_URI": mongo_uri, "MONGODB_DATABASE": "vidmp3",
            "DATABASE_URL": f"mysql://vidmp3:vidmp3@127.0.0.1:3306/{DB}",
            "JWT_SECRET": base64.b64encode(os.urandom(48)).decode(),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{PORTS['gateway']}",
        })
        subprocess.run([str(binp / "auth"), "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([str(binp / "auth"), "user", "add", "--email", EMAIL, "--exists-ok"],
                       env=dict(env, AUTH_NEW_PASSWORD=PASSWORD), check=True, stdout=subprocess.DEVNULL)

        def fn(name, argv, extra):
            e = dict(env, PORT=str(PORTS[name]), **extra)
            return Proc(name, argv, PORTS[name], env=e, cwd=chaos, log_dir=logs,
                        health=f"http://127.0.0.1:{PORTS[name]}/healthz")

        broker_url = f"http://127.0.0.1:{PORTS['broker']}/vidmp3/default"
        procs["auth"] = fn("auth", [str(binp / "auth")], {})
        procs["converter"] = fn("converter", [str(binp / "converter")], {"CONVERT_TMPDIR": str(chaos / "tmp")})
        procs["notification"] = fn("notification", [str(binp / "notification")], {
            "SMTP_URL": f"smtp://127.0.0.1:{PORTS['smtp']}", "MAIL_FROM": "vidmp3 <no-reply@vidmp3.local>"})
        procs["broker"] = Proc("broker", [
            str(binp / "eventing-runner"), "--manifests", str(root / "eventing"),
            "--amqp-url", f"amqp://guest:guest@127.0.0.1:{PORTS['amqp']}/%2f",
            "--listen", f"127.0.0.1:{PORTS['broker']}",
            "--subscriber", f"converter=http://127.0.0.1:{PORTS['converter']}",
            "--subscriber", f"notification=http://127.0.0.1:{PORTS['notification']}",
            "--subscriber", f"dead-letters=http://127.0.0.1:{PORTS['dead-letters']}",
        ], PORTS["broker"], env=env, cwd=chaos, log_dir=logs, health=f"http://127.0.0.1:{PORTS['broker']}/healthz")
        procs["gateway"] = fn("gateway", [str(binp / "gateway")], {
            "AUTH_URL": f"http://127.0.0.1:{PORTS['auth']}", "K_SINK": broker_url})
        for name in ("auth", "converter", "notification", "broker", "gateway"):
            procs[name].start()
        log("runner and four functions up")

        def watcher():
            while not watcher_stop.wait(0.5):
                for p in procs.values():
                    try:
                        p.check()
                    except BaseException as e:  # noqa: BLE001
                        log(f"!! could not restart {p.name}: {e}")

        threading.Thread(target=watcher, daemon=True).start()

        gw = f"http://127.0.0.1:{PORTS['gateway']}"

        def redeliver_timer():  # the PingSource of the cluster, every 10 s like dev-up's
            while not watcher_stop.wait(10):
                try:
                    request("POST", gw + "/internal/redeliver", timeout=30)
                except Exception:
                    pass

        threading.Thread(target=redeliver_timer, daemon=True).start()

        auth = "Basic " + base64.b64encode(f"{EMAIL}:{PASSWORD}".encode()).decode()
        status, body = request("POST", gw + "/login", headers={"Authorization": auth})
        if status != 200:
            raise SystemExit(f"chaos: login failed: {status} {body[:200]!r}")
        token = body.decode().strip()
        mongo = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=3000)
        db = mongo["vidmp3"]

        # --- the faults --------------------------------------------------------------------------------------
        faults = []

        def fault(what, fn_):
            t = time.monotonic()
            log(f">> {what}")
            try:
                fn_()
                faults.append({"fault": what, "at_s": round(t - t_uploads, 1), "took_s": round(time.monotonic() - t, 1)})
            except BaseException as e:  # noqa: BLE001
                log(f"!! fault {what!r} failed: {e}")
                faults.append({"fault": what, "error": str(e)})
            log(f"<< {what}")

        def restart_rabbit():
            procs["rabbitmq"].stop()
            procs["rabbitmq"].start(timeout=120)

        def kill_converter():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if db.jobs.count_documents({"state": "converting"}) > 0:
                        break
                except Exception:
                    pass
                time.sleep(0.05)
            else:
                raise RuntimeError("no job was converting within 30 s")
            procs["converter"].stop(sig=signal.SIGKILL)
            time.sleep(2)
            procs["converter"].start()

        def mongo_down():
            procs["mongodb"].stop()
            time.sleep(10)
            procs["mongodb"].start()

        def smtp_down():
            procs["smtp"].stop()
            time.sleep(30)
            procs["smtp"].start()

        schedule = [
            (6, "RabbitMQ restart 1/2", restart_rabbit),
            (15, "converter SIGKILL mid-conversion", kill_converter),
            (28, "MongoDB down 10 s", mongo_down),
            (45, "SMTP down 30 s", smtp_down),
            (60, "RabbitMQ restart 2/2", restart_rabbit),
        ]

        def chaos_monkey():  # each fault on its own clock: the SMTP outage overlaps the second RabbitMQ restart
            def one(at, what, f):
                delay = t_uploads + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                fault(what, f)

            threads = [threading.Thread(target=one, args=s) for s in schedule]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        # --- the uploads -------------------------------------------------------------------------------------
        uploads = []  # one dict per upload
        lock = threading.Lock()
        next_i = [0]
        spacing = 0.7  # seconds between upload starts: 100 uploads over ~70 s, across every fault

        def uploader():
            while True:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                if i >= args.uploads:
                    return
                start_at = t_uploads + i * spacing
                if start_at > time.monotonic():
                    time.sleep(start_at - time.monotonic())
                clip = CLIPS[i % len(CLIPS)]
                data = (media / clip).read_bytes()
                stem, ext = os.path.splitext(clip)
                name = f"chaos-{i:03d}-{stem}{ext}"
                rec = {"i": i, "filename": name, "attempts": 0, "statuses": []}
                boundary = uuid.uuid4().hex
                body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                        f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
                headers = {"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
                while rec["attempts"] < 30:
                    rec["attempts"] += 1
                    try:
                        status, resp = request("POST", gw + "/upload", data=body, headers=headers, timeout=60)
                    except Exception as e:  # connection refused/reset: no answer, send it again
                        status, resp = 0, str(e).encode()
                    rec["statuses"].append(status)
                    if status == 202:
                        j = json.loads(resp)
                        rec["job_id"] = j["job_id"]
                        rec["event_pending"] = j.get("event_pending")
                        break
                    if status in (0, 502, 503, 504):
                        time.sleep(1.0 + random.random())
                        continue
                    rec["error"] = resp[:300].decode(errors="replace")
                    break
                with lock:
                    uploads.append(rec)
                if status != 202:
                    log(f"!! upload {i} failed for good: {rec['statuses']} {rec.get('error', '')}")

        t_uploads = time.monotonic()
        log(f"{args.uploads} uploads, faults at {[s[0] for s in schedule]} s")
        monkey = threading.Thread(target=chaos_monkey)
        monkey.start()
        workers = [threading.Thread(target=uploader) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        monkey.join()
        t_done = time.monotonic()
        log(f"uploads done in {t_done - t_uploads:.0f} s; waiting for conversions and emails (at most {args.wait} s)")

        job_ids = [u["job_id"] for u in uploads if "job_id" in u]

        def emails_by_job():
            counts = {}
            for f in sorted((chaos / "mail").glob("*.eml")):
                msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
                text = ""
                for part in msg.walk():
                    if part.get_content_type() == "text/plain":
                        text += part.get_content()
                for jid in job_ids:
                    if jid in text:
                        counts[jid] = counts.get(jid, 0) + 1
            return counts

        deadline = time.monotonic() + args.wait
        while True:
            try:
                converted = db.jobs.count_documents({"_id": {"$in": job_ids}, "state": "converted"})
                failed = db.jobs.count_documents({"_id": {"$in": job_ids}, "state": "failed"})
                notified = db.jobs.count_documents({"_id": {"$in": job_ids}, "notified_at": {"$ne": None}})
            except Exception as e:  # noqa: BLE001
                log(f"MongoDB: {e}")
                converted = failed = notified = -1
            mails = sum(emails_by_job().values())
            log(f"converted {converted} failed {failed} notified {notified} emails {mails} / {len(job_ids)}")
            if (converted + failed >= len(job_ids) and mails >= len(job_ids)) or time.monotonic() > deadline:
                break
            time.sleep(5)
        # Late duplicates (a redelivery after the count) would still show: settle a little.
        time.sleep(5)
        watcher_stop.set()

        # --- the counts --------------------------------------------------------------------------------------
        jobs = {j["_id"]: j for j in db.jobs.find({"_id": {"$in": job_ids}})}
        mp3_files = list(db["mp3s.files"].find({}, {"filename": 1, "length": 1}))
        mp3_by_job = {}
        name_to_job = {}
        for u in uploads:
            if "job_id" in u:
                name_to_job[os.path.splitext(u["filename"])[0] + ".mp3"] = u["job_id"]
        for f in mp3_files:
            jid = name_to_job.get(f.get("filename"), "?")
            mp3_by_job[jid] = mp3_by_job.get(jid, 0) + 1
        referenced = {j.get("mp3_id") for j in jobs.values() if j.get("mp3_id")}
        orphans = {}
        for bucket in ("videos", "mp3s"):
            file_ids = {f["_id"] for f in db[f"{bucket}.files"].find({}, {"_id": 1})}
            chunk_owner = [c["files_id"] for c in db[f"{bucket}.chunks"].find({}, {"files_id": 1})]
            orphans[bucket] = sum(1 for fid in chunk_owner if fid not in file_ids)
        mails = emails_by_job()
        temp_left = sorted(p.name for p in (chaos / "tmp").iterdir())
        dead_letters = sorted(p.name for p in (chaos / "dead-letters").glob("*.json"))
        other_jobs = db.jobs.count_documents({"_id": {"$nin": job_ids}})
        restarted_by_hand = {p.name: len(p.unexpected_deaths) for p in procs.values() if p.unexpected_deaths}

        summary = {
            "uploads": args.uploads,
            "uploads_accepted": len(job_ids),
            "jobs_converted": sum(1 for j in jobs.values() if j.get("state") == "converted"),
            "jobs_failed": sum(1 for j in jobs.values() if j.get("state") == "failed"),
            "mp3s_stored": sum(1 for jid in job_ids if mp3_by_job.get(jid, 0) >= 1),
            "emails_received": sum(1 for jid in job_ids if mails.get(jid, 0) >= 1),
            "duplicate_mp3s": sum(n - 1 for jid, n in mp3_by_job.items() if n > 1 and jid != "?")
            + mp3_by_job.get("?", 0),
            "duplicate_emails": sum(n - 1 for n in mails.values() if n > 1),
            "orphan_chunks": orphans["videos"] + orphans["mp3s"],
            "temp_files_left": len(temp_left),
            "restarted_by_hand": sum(restarted_by_hand.values()),
            # context
            "orphan_chunks_by_bucket": orphans,
            "mp3_files_not_referenced_by_a_job": sum(1 for f in mp3_files if f["_id"] not in referenced),
            "jobs_not_from_a_202": other_jobs,
            "upload_attempts": sum(u["attempts"] for u in uploads),
            "uploads_retried": sum(1 for u in uploads if u["attempts"] > 1),
            "retry_statuses": sorted({s for u in uploads for s in u["statuses"] if s != 202}),
            "events_pending_at_upload": sum(1 for u in uploads if u.get("event_pending")),
            "dead_letters": len(dead_letters),
            "temp_files": temp_left[:20],
            "died_on_their_own": restarted_by_hand,
            "faults": faults,
            "upload_phase_s": round(t_done - t_uploads, 1),
            "drain_s": round(time.monotonic() - t_done, 1),
            "total_s": round(time.time() - started, 1),
            "not_done": sorted(jid for jid in job_ids if jobs.get(jid, {}).get("state") != "converted")[:10],
            "not_emailed": sorted(jid for jid in job_ids if mails.get(jid, 0) == 0)[:10],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        rows = [
            ("jobs converted", summary["jobs_converted"], args.uploads),
            ("MP3s stored", summary["mp3s_stored"], args.uploads),
            ("emails received", summary["emails_received"], args.uploads),
            ("duplicate MP3s", summary["duplicate_mp3s"], 0),
            ("duplicate emails", summary["duplicate_emails"], 0),
            ("orphan GridFS chunks", summary["orphan_chunks"], 0),
            ("temp files left", summary["temp_files_left"], 0),
            ("processes restarted by hand", summary["restarted_by_hand"], 0),
        ]
        table = ["| count | got | target |", "|---|---|---|"]
        table += [f"| {n} | {g} | {t} |" for n, g, t in rows]
        (out_dir / "summary.md").write_text("\n".join(table) + "\n")
        print("\n".join(table))
        print(f"\n{summary['uploads_accepted']} uploads accepted after {summary['upload_attempts']} attempts "
              f"({summary['uploads_retried']} retried on {summary['retry_statuses']}); "
              f"{summary['events_pending_at_upload']} events pending at upload; {summary['dead_letters']} dead letters; "
              f"uploads {summary['upload_phase_s']} s, drain {summary['drain_s']} s, total {summary['total_s']} s")
        print(f"summary: {out_dir / 'summary.json'}; logs: {logs}")
        ok = all(g == t for _, g, t in rows)
        return 0 if ok else 1
    finally:
        watcher_stop.set()
        for name in ("gateway", "broker", "notification", "converter", "auth", "dead-letters", "smtp", "mongodb", "rabbitmq"):
            p = procs.get(name)
            if p:
                try:
                    p.stop(grace=15)
                except BaseException:  # noqa: BLE001
                    p.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
