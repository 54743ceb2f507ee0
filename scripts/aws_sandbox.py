#!/usr/bin/env python3
"""The AWS sandbox: run fleet's whole AWS path on this computer, with no AWS account.

    python scripts/aws_sandbox.py > sandbox.env &     # leave it running (Ctrl-C / kill to stop)
    . ./sandbox.env                                   # the printed `export …` lines
    fleet offers --gpus 8
    fleet up --provider aws --template aws-8gpu --gpus 8

It starts moto in server mode on 127.0.0.1 (serving, besides its own images, a stand-in for each image
recipe's base image, so `fleet image bake base-cpu` runs here in check mode), creates what the Pulumi
stack would create (VPC, subnets in 3 AZs, security group, instance profile, snapshot bucket, a launch
template per machine template) with boto3, writes the stack outputs file, and prints the environment to export:
AWS_ENDPOINT_URL, fake credentials, FLEET_AWS_OUTPUTS and FLEET_AWS_SANDBOX=1. With
FLEET_AWS_SANDBOX=1 the AWS provider binds every instance moto "launches" to a real sshd on
127.0.0.1 before anything connects (fleet/providers/aws/sandbox.py). GPUs are simulated.

It serves until Ctrl-C / SIGTERM, then stops every sandbox machine it can find and exits.

    python scripts/aws_sandbox.py interrupt INSTANCE_ID [--after 120]   # with the exports above

simulates a spot reclaim of one sandbox instance: the notice appears in its metadata (what
IMDSv2's spot/instance-action serves), and --after seconds later (AWS: two minutes) the instance is
terminated and its machine killed (docs/managed-runs.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interrupt(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aws_sandbox.py interrupt",
                                     description="Simulate a spot reclaim of one sandbox instance.")
    parser.add_argument("instance_id")
    parser.add_argument("--after", type=float, default=120.0, help="seconds from notice to termination")
    args = parser.parse_args(argv)
    if not os.environ.get("AWS_ENDPOINT_URL"):
        print("aws_sandbox: error: AWS_ENDPOINT_URL is not set (export the sandbox's lines first)", file=sys.stderr)
        return 2
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    ec2 = boto3.client("ec2", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    try:
        reclaim = Sandbox().interrupt(args.instance_id, ec2, after_s=args.after)
    except KeyError as exc:
        print(f"aws_sandbox: error: {exc.args[0]}", file=sys.stderr)
        return 4
    print(f"notice served for {args.instance_id}; terminating it in {args.after:g}s", flush=True)
    reclaim.join()
    print(f"{args.instance_id} terminated and its machine stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["interrupt"]:
        return interrupt(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="moto server port (default: a free one)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--outputs", type=Path, default=None,
                        help="where to write the stack outputs (default $FLEET_HOME/aws-sandbox/outputs.json)")
    parser.add_argument("--templates", type=Path, default=None,
                        help="JSON file: template name → {instance_types, gpus_per_machine, spot, …}")
    args = parser.parse_args(argv)

    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("aws_sandbox: error: moto[server] is not installed (pip install 'moto[server]')", file=sys.stderr)
        return 3
    from fleet.paths import subdir
    from fleet.providers.aws.sandbox import Sandbox, create_stack, write_moto_amis

    # Before moto loads its EC2 backend (on the first request): the images it serves include a stand-in
    # for each recipe's base image, so `fleet image bake base-cpu` works here as docs/aws.md shows.
    os.environ["MOTO_AMIS_PATH"] = str(write_moto_amis(subdir("aws-sandbox") / "moto-amis.json"))

    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)      # no per-request log lines
    from fleet.providers.aws import moto_tags
    moto_tags.install()        # after MOTO_AMIS_PATH: importing moto's EC2 models reads it
    port = args.port or _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox",
           "AWS_DEFAULT_REGION": args.region, "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    stopping = threading.Event()
    try:
        templates = json.loads(args.templates.read_text()) if args.templates else None
        outputs = create_stack(args.region, templates)
        path = args.outputs or subdir("aws-sandbox") / "outputs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outputs, indent=2) + "\n")
        env.update(FLEET_AWS_OUTPUTS=str(path.resolve()), FLEET_AWS_SANDBOX="1")
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
        names = ", ".join(outputs["fleet"]["templates"])
        print(f"# sandbox ready: moto on {endpoint}, templates: {names}. Ctrl-C to stop.", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        stopping.wait()
    finally:
        try:
            sandbox = Sandbox()
            sandbox.unbind([b["instance_id"] for b in sandbox.bindings()])
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
