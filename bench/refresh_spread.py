"""When 1,000 browser clients whose tokens expire in the same minute refresh them (issue 19): the
browser client's own schedule (`refreshDelay` of ws_edge/static/push-client.js, run in node), against
refreshing at the edge's notice (`refresh_required`, EDGE_TOKEN_REFRESH_NOTICE before `exp`).

    .venv/bin/python -m bench.refresh_spread [--clients 1000] [--ttl 3600] [--notice 10] [--spread 60]

The clients got tokens of `--ttl` seconds over `--spread` seconds (60: the same minute; 0: the same
second, as after an edge restart), so their tokens expire within that minute. Prints a histogram of
refreshes (per minute, or per second for short tokens) and the busiest second, for both schedules.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
from collections import Counter
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[1] / "ws_edge" / "static" / "push-client.js"

# Client i got its token of `ttl` seconds at i * spread / clients seconds: the refresh delay is the
# client's own function, called once per client with its time left (Math.random as in a browser).
NODE = """
const { refreshDelay } = await import(process.argv[1]);
const [clients, ttl, spread] = [Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const at = [];
for (let i = 0; i < clients; i++) {
  const connected = (i * spread) / clients;
  at.push(connected + refreshDelay(ttl * 1000) / 1000);
}
console.log(JSON.stringify(at));
"""


def client_schedule(clients: int, ttl: float, spread: float) -> list[float]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is needed to run the browser client's schedule (apt-get install nodejs)")
    done = subprocess.run([node, "--input-type=module", "-e", NODE, str(CLIENT), str(clients), str(ttl), str(spread)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def histogram(times: list[float], bucket: float, label: str) -> list[str]:
    per_bucket = Counter(int(t // bucket) for t in times)
    per_second = Counter(int(t) for t in times)
    first, last = min(per_bucket), max(per_bucket)
    peak = max(per_bucket.values())
    lines = [f"{label}: {len(times)} refreshes from {min(times):.0f} s to {max(times):.0f} s after the first "
             f"connect; busiest second {max(per_second.values())}, busiest {bucket:g} s {peak}"]
    for b in range(first, last + 1):
        count = per_bucket.get(b, 0)
        bar = "#" * round(50 * count / peak)
        lines.append(f"  {b * bucket:7.0f} s  {count:5d}  {bar}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--ttl", type=float, default=3600.0, help="token lifetime, seconds")
    parser.add_argument("--notice", type=float, default=10.0, help="EDGE_TOKEN_REFRESH_NOTICE, seconds")
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which the tokens were issued")
    args = parser.parse_args()
    ours = client_schedule(args.clients, args.ttl, args.spread)
    connected = [(i * args.spread) / args.clients for i in range(args.clients)]
    at_notice = [c + args.ttl - args.notice + random.random() * 0.05 for c in connected]  # network jitter only
    bucket = 60.0 if args.ttl >= 600 else 1.0
    print(f"{args.clients} clients, {args.ttl:g} s tokens issued over {args.spread:g} s (all expire in the same "
          "minute)\n")
    print("\n".join(histogram(ours, bucket, "push-client.js (refreshDelay, window 0.6..0.85 of the time left)")))
    print()
    print("\n".join(histogram(at_notice, bucket, f"without jitter (at refresh_required, {args.notice:g} s before exp)")))


if __name__ == "__main__":
    main()
