#!/usr/bin/env python3
"""The soak workload of bench/soak.sh (issue 18, item 5), for one target: husk's CLI or Docker's.

16 client threads (--clients) loop over cycles until --duration passes:
  container round  run -d (even cycles) or create + start (odd), exec, logs, a second create of the same name
                   (which the API must refuse: counted as refused, never as a failure), stop, inspect, rm -f;
  sandbox round    husk: sandbox create, run --sandbox, exec, sandbox rm -f;
                   Docker (no sandboxes): an infra container (`sleep`, as a pause process) and a member run with
                   --network container:INFRA --ipc container:INFRA, exec, rm -f of both;
  image round      pull -q of the client's own tag from a local registry, image rm of it.
Each client also runs one container for the whole soak which must still run, as the same process, at the end.
Meanwhile the controller restarts the daemon three times (at 15, 35 and 55 % of the duration: SIGTERM, kill -9,
SIGTERM) with `CTL down term|kill` and `CTL up`. A call that finds the daemon unavailable while it is down is
tried again once it is back; a retried create refused with "in use", a retried start with "is running" or a
retried removal with "no such" counts as refused (its interrupted first attempt did the work); anything else is a
failure.

Prints a table and appends to --csv: target, operation, done, ops/s, p50, p99, max (ms), refused, unavailable,
failed; the daemon's RSS and fd count (`CTL pids`: the daemon's processes, summed) at the baseline after a
warm-up cycle and at the end after everything was removed. Exits 1 if any operation failed.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time

UNAVAILABLE = {
    "husk": ["cannot connect to the husk daemon", "request to the daemon", "read the daemon's answer",
             "HTTP handshake with the daemon", "read the daemon's stream", "error reading a body from connection",
             "connection closed before message completed",
             "Connection reset by peer", "Broken pipe"],
    "docker": ["Cannot connect to the Docker daemon", "error during connect", "connection reset by peer",
               "connection refused", "EOF", "broken pipe", "is restarting", "daemon is shutting down"],
}
IN_USE = "in use"        # husk: "the container name ... is already in use"; Docker: "... is already in use by"
NO_SUCH = "no such"      # compared lower-case: Docker says "No such container"
IS_RUNNING = "is running"  # husk, to a start its interrupted first attempt did: "... it is running"


class Availability:
    """Windows in which the controller has the daemon down; clients wait here for it to be back."""

    def __init__(self):
        self.windows = []  # [down_since, up_again or None]
        self.cond = threading.Condition()

    def down(self):
        with self.cond:
            self.windows.append([time.monotonic(), None])

    def up(self):
        with self.cond:
            self.windows[-1][1] = time.monotonic()
            self.cond.notify_all()

    def was_down(self, start, end):
        with self.cond:
            return any(d <= end and (u is None or u >= start) for d, u in self.windows)

    def wait_up(self, limit=180):
        with self.cond:
            return self.cond.wait_for(lambda: not self.windows or self.windows[-1][1] is not None, limit)


class Client:
    def __init__(self, index, args, avail):
        self.i = index
        self.args = args
        self.avail = avail
        self.cli = json.loads(args.cli)
        self.flavour = args.flavour
        self.reference = f"{args.registry}/soak/busybox:c{index}"
        self.attempts = []  # (kind, seconds, outcome)
        self.failures = []
        self.cycles = 0

    def call(self, argv):
        t0 = time.monotonic()
        try:
            p = subprocess.run(self.cli + argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=120)
            code, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired:
            code, out, err = -1, "", "timed out after 120 s"
        return code, out, err, t0, time.monotonic()

    def unavailable(self, err):
        return any(p in err for p in UNAVAILABLE[self.flavour])

    def record(self, kind, seconds, outcome, why=""):
        self.attempts.append((kind, seconds, outcome))
        if outcome == "failed":
            self.failures.append(f"client {self.i}: {kind}: {why}")

    def op(self, kind, argv, retry=None):
        """Runs one operation to its end; returns (code, stdout, stderr) or None if it failed."""
        interrupted = False
        for _ in range(6):
            code, out, err, t0, t1 = self.call(argv)
            said = f"`{' '.join(argv)}` exited {code}: {err.strip()}"
            if code == 0:
                self.record(kind, t1 - t0, "ok")
                return code, out, err
            if self.unavailable(err) and self.avail.was_down(t0, t1):
                self.record(kind, t1 - t0, "unavailable")
                interrupted = True
                self.avail.wait_up()
                continue
            if interrupted and retry and retry in err.lower():
                self.record(kind, t1 - t0, "refused")
                return code, out, err
            self.record(kind, t1 - t0, "failed", said)
            return None
        self.record(kind, 0, "failed", f"`{' '.join(argv)}`: unavailable six times")
        return None

    def refused(self, kind, argv, expected):
        """Runs an operation the API must refuse saying `expected` (tried again after the daemon was down)."""
        for _ in range(6):
            code, out, err, t0, t1 = self.call(argv)
            if code != 0 and expected in err.lower():
                self.record(kind, t1 - t0, "refused")
                return True
            if self.unavailable(err) and self.avail.was_down(t0, t1):
                self.record(kind, t1 - t0, "unavailable")
                self.avail.wait_up()
                continue
            self.record(kind, t1 - t0, "failed", f"`{' '.join(argv)}` exited {code}, not refused: {out}{err}")
            return False
        self.record(kind, 0, "failed", f"`{' '.join(argv)}`: unavailable six times")
        return False

    def make(self, kind, name, argv, remove):
        r = self.op(kind, argv, IN_USE)
        if r is None:
            return None
        if r[0] != 0:  # the interrupted attempt made it, in a state nobody saw: remove and make again
            if self.op("rm", remove, NO_SUCH) is None:
                return None
            return self.op(kind, argv)
        return r

    def check(self, ok, what):
        if not ok:
            self.failures.append(f"client {self.i}: {what}")
        return ok

    def container_round(self, n):
        name = f"soak{self.i}-{n}-c"
        script = "trap 'exit 0' TERM; echo ready; sleep 100000 & wait"
        if n % 2 == 0:
            if not self.make("run", name, ["run", "-d", "--name", name, self.args.image, "sh", "-c", script],
                             ["rm", "-f", name]):
                return False
        else:
            if not self.make("create", name, ["create", "--name", name, self.args.image, "sh", "-c", script],
                             ["rm", "-f", name]):
                return False
            if not self.op("start", ["start", name], IS_RUNNING):
                return False
        token = f"hello-{self.i}-{n}"
        r = self.op("exec", ["exec", name, "echo", token])
        if not r or not self.check(r[1].strip() == token, f"exec in {name} printed {r[1]!r}"):
            return False
        logged = ""
        for _ in range(20):
            r = self.op("logs", ["logs", name])
            if not r:
                return False
            logged = r[1]
            if "ready" in logged:
                break
            time.sleep(0.1)
        if not self.check("ready" in logged, f"the log of {name} lacks its line: {logged!r}"):
            return False
        if not self.refused("duplicate", ["create", "--name", name, self.args.image, "true"], IN_USE):
            return False
        if not self.op("stop", ["stop", "-t", "10", name]):
            return False
        r = self.op("inspect", ["inspect", name])
        if not r:
            return False
        status = json.loads(r[1])[0]["State"]["Status"]
        if not self.check(status == "exited", f"{name} is {status} after stop"):
            return False
        return bool(self.op("rm", ["rm", "-f", name], NO_SUCH))

    def sandbox_round(self, n):
        sandbox, member = f"soak{self.i}-{n}-s", f"soak{self.i}-{n}-m"
        if self.flavour == "husk":
            if not self.make("sandbox create", sandbox, ["sandbox", "create", "--name", sandbox],
                             ["sandbox", "rm", "-f", sandbox]):
                return False
            join = ["--sandbox", sandbox]
            remove = ["sandbox", "rm", "-f", sandbox]
        else:
            if not self.make("sandbox create", sandbox,
                             ["run", "-d", "--name", sandbox, "--ipc", "shareable", self.args.image, "sleep",
                              "100000"], ["rm", "-f", sandbox]):
                return False
            join = ["--network", f"container:{sandbox}", "--ipc", f"container:{sandbox}"]
            remove = ["rm", "-f", member, sandbox]
        if not self.make("run in sandbox", member,
                         ["run", "-d", "--name", member] + join + [self.args.image, "sleep", "100000"],
                         ["rm", "-f", member]):
            return False
        token = f"member-{self.i}-{n}"
        r = self.op("exec", ["exec", member, "echo", token])
        if not r or not self.check(r[1].strip() == token, f"exec in {member} printed {r[1]!r}"):
            return False
        if not self.op("sandbox rm", remove, NO_SUCH):
            return False
        return self.refused("inspect gone", ["inspect", member], NO_SUCH)

    def image_round(self):
        return bool(self.op("pull", ["pull", "-q", self.reference])) and \
            bool(self.op("rmi", ["image", "rm", self.reference], NO_SUCH))

    def cycle(self, n):
        if self.container_round(n) and self.sandbox_round(n) and self.image_round():
            self.cycles += 1
            return
        self.avail.wait_up()
        for name in ("c", "m", "s"):
            self.call(["rm", "-f", f"soak{self.i}-{n}-{name}"])
        if self.flavour == "husk":
            self.call(["sandbox", "rm", "-f", f"soak{self.i}-{n}-s"])
        self.call(["image", "rm", self.reference])


def ctl(args, *what):
    p = subprocess.run([args.ctl, *what], capture_output=True, text=True)
    if p.returncode != 0:
        # The daemon did not come back: the clients wait for it, so leave now.
        print(f"soak {args.target}: `{args.ctl} {' '.join(what)}` failed: {p.stderr}", file=sys.stderr)
        os._exit(2)
    return p.stdout


def rss_fds(args):
    rss = fds = 0
    for pid in ctl(args, "pids").split():
        with open(f"/proc/{pid}/status") as f:
            rss += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds += len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def quantile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values), max(1, math.ceil(q * len(sorted_values)))) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="name in the table: husk or docker")
    ap.add_argument("--flavour", choices=["husk", "docker"], required=True)
    ap.add_argument("--cli", required=True, help="the CLI as a JSON list")
    ap.add_argument("--ctl", required=True, help="CTL down term|kill, CTL up, CTL pids")
    ap.add_argument("--image", required=True)
    ap.add_argument("--registry", required=True, help="HOST:PORT of the registry holding soak/busybox:cN")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--csv", required=True)
    args = ap.parse_args()

    avail = Availability()
    clients = [Client(i, args, avail) for i in range(args.clients)]
    warm = [threading.Thread(target=c.cycle, args=(1000,)) for c in clients]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    warm_failures = [f for c in clients for f in c.failures]
    for c in clients:
        c.attempts, c.cycles = [], 0
    time.sleep(1)
    base_rss, base_fds = rss_fds(args)

    start = time.monotonic()
    keepers = {}

    def client_main(c):
        keeper = f"soak{c.i}-keep"
        if c.make("run", keeper, ["run", "-d", "--name", keeper, args.image, "sleep", "100000"],
                  ["rm", "-f", keeper]):
            r = c.op("inspect", ["inspect", keeper])
            if r:
                keepers[c.i] = (keeper, json.loads(r[1])[0]["State"]["Pid"])
        n = 0
        while time.monotonic() - start < args.duration:
            c.cycle(n)
            n += 1

    threads = [threading.Thread(target=client_main, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    restarts = []
    for at, how in ((0.15, "term"), (0.35, "kill"), (0.55, "term")):
        time.sleep(max(0.0, start + at * args.duration - time.monotonic()))
        avail.down()
        t0 = time.monotonic()
        ctl(args, "down", how)
        time.sleep(0.8)
        ctl(args, "up")
        avail.up()
        restarts.append(f"{how} {time.monotonic() - t0:.1f} s")
        print(f"soak {args.target}: restarted ({how}) at {time.monotonic() - start:.0f} s", file=sys.stderr)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start

    failures = warm_failures + [f for c in clients for f in c.failures]
    cli = json.loads(args.cli)
    for i, (keeper, pid) in sorted(keepers.items()):
        r = subprocess.run(cli + ["inspect", keeper], capture_output=True, text=True)
        state = json.loads(r.stdout)[0]["State"] if r.returncode == 0 else {}
        if state.get("Status") != "running" or state.get("Pid") != pid:
            failures.append(f"{keeper} (pid {pid}) after the restarts: {state or r.stderr}")
        r = subprocess.run(cli + ["exec", keeper, "echo", "survived"], capture_output=True, text=True)
        if r.stdout.strip() != "survived":
            failures.append(f"exec in {keeper}: {r.stdout} {r.stderr}")
        subprocess.run(cli + ["rm", "-f", keeper], capture_output=True)
    failures += [f"client {c.i} never started its long-running container" for c in clients if c.i not in keepers]
    left = subprocess.run(cli + ["ps", "-aq"], capture_output=True, text=True).stdout.split()
    if left:
        failures.append(f"containers left: {left}")
    time.sleep(2)
    end_rss, end_fds = rss_fds(args)

    rows = {}
    for c in clients:
        for kind, seconds, outcome in c.attempts:
            r = rows.setdefault(kind, {"lat": [], "refused": 0, "unavailable": 0, "failed": 0})
            if outcome in ("ok", "refused"):
                r["lat"].append(seconds * 1000)
            if outcome != "ok":
                r[outcome] += 1
    total = sum(len(r["lat"]) for r in rows.values())
    new = not os.path.exists(args.csv)
    with open(args.csv, "a") as f:
        if new:
            f.write("target,operation,done,ops_per_s,p50_ms,p99_ms,max_ms,refused,unavailable,failed\n")
        for kind, r in sorted(rows.items()):
            lat = sorted(r["lat"])
            f.write(f"{args.target},{kind},{len(lat)},{len(lat) / elapsed:.2f},{quantile(lat, 0.5):.1f},"
                    f"{quantile(lat, 0.99):.1f},{(lat[-1] if lat else 0):.1f},{r['refused']},"
                    f"{r['unavailable']},{r['failed']}\n")
        f.write(f"{args.target},ALL,{total},{total / elapsed:.2f},,,,"
                f"{sum(r['refused'] for r in rows.values())},{sum(r['unavailable'] for r in rows.values())},"
                f"{len(failures)}\n")
        f.write(f"{args.target},daemon RSS KiB (baseline->end),{base_rss},{end_rss},,,,,,\n")
        f.write(f"{args.target},daemon fds (baseline->end),{base_fds},{end_fds},,,,,,\n")
    cycles = [c.cycles for c in clients]
    print(f"soak {args.target}: {total} operations in {elapsed:.0f} s ({total / elapsed:.1f} ops/s); cycles per "
          f"client {min(cycles)}-{max(cycles)}; restarts: {', '.join(restarts)}; daemon RSS {base_rss} -> "
          f"{end_rss} KiB ({(end_rss / base_rss - 1) * 100:+.1f} %), fds {base_fds} -> {end_fds}",
          file=sys.stderr)
    for f in failures:
        print(f"soak {args.target}: FAILED: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
