"""On a machine: watch for a spot interruption notice and say so at once. Stdlib only.

Run as `python -S -c <this source> URL` over one SSH channel for the life of the command. URL is
the instance metadata service (IMDSv2: http://169.254.169.254, a session token first, then
`latest/meta-data/spot/instance-action`, which answers 404 until AWS schedules the reclaim), or,
in the AWS sandbox, `file://DIR` with the same paths under DIR (moto has no metadata service;
the sandbox writes the notice there). A rebalance recommendation
(`latest/meta-data/events/recommendations/rebalance`) is reported once, as informative.

Prints one JSON line per event: {"notice": "spot", "action", "time"} (then exits: the controller
acts on it) or {"rebalance": time}. Polls every second (a call on the instance itself; AWS
suggests every 5 s): the notice comes two minutes before the machine goes, and every second of
them is time for the checkpoint.
"""
import json
import sys
import time
import urllib.error
import urllib.request

ACTION = "latest/meta-data/spot/instance-action"
REBALANCE = "latest/meta-data/events/recommendations/rebalance"
POLL_S = 1.0


def _file_get(base, path):
    try:
        with open(f"{base[len('file://'):]}/{path}") as fh:
            return fh.read()
    except OSError:
        return None


class IMDSv2:
    def __init__(self, base):
        self.base, self.token, self.token_at = base.rstrip("/"), None, 0.0

    def _token(self):
        if self.token is None or time.monotonic() - self.token_at > 300:
            req = urllib.request.Request(f"{self.base}/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "600"})
            with urllib.request.urlopen(req, timeout=2) as resp:
                self.token, self.token_at = resp.read().decode(), time.monotonic()
        return self.token

    def get(self, path):
        req = urllib.request.Request(f"{self.base}/{path}", headers={"X-aws-ec2-metadata-token": self._token()})
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                self.token = None
            return None


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    base = sys.argv[1]
    get = (lambda path: _file_get(base, path)) if base.startswith("file://") else IMDSv2(base).get
    say({"watching": base})
    rebalance_said = False
    while True:
        try:
            action = get(ACTION)
            if action:
                body = json.loads(action)
                say({"notice": "spot", "action": body.get("action", ""), "time": body.get("time", "")})
                return
            if not rebalance_said:
                rebalance = get(REBALANCE)
                if rebalance:
                    rebalance_said = True
                    say({"rebalance": json.loads(rebalance).get("noticeTime", "")})
        except (OSError, ValueError):
            pass   # the metadata service blinked: try again next poll
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
