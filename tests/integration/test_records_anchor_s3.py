"""Runs that use an S3 store also anchor the record chain's tip in the bucket (moto server): a rewrite
of the newest record is caught even if the local anchor file was rewritten too."""
from __future__ import annotations

import hashlib
import json

import boto3

from fleet.records.chain import RunRecord, append_record, canonical
from fleet.records.anchor import check_anchors, tip_path
from fleet.state.db import Database


def test_s3_anchor_catches_a_rewrite_the_local_file_hides(aws_env, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="fleet-anchor")
    db = Database(tmp_path / "state.db")
    try:
        rec = append_record(RunRecord(run_id="r-1", command="train", store="s3://fleet-anchor/team"), db)
        tip = json.loads(s3.get_object(Bucket="fleet-anchor", Key="team/records/tip")["Body"].read())
        assert tip == {"seq": rec.seq, "run_id": "r-1", "hash": rec.hash}
        body = {**json.loads(db.execute("SELECT body FROM run_records")[0]["body"]), "exit_status": 0}
        forged = hashlib.sha256(canonical(body)).hexdigest()
        db.execute("UPDATE run_records SET body = ?, hash = ?", (canonical(body).decode(), forged))
        tip_path(db).write_text(json.dumps({"seq": rec.seq, "run_id": "r-1", "hash": forged}))  # local forged too
        (problem,) = check_anchors(db, {"s3://fleet-anchor/team"})
        assert "anchored in s3://fleet-anchor/team/records/tip" in problem and rec.hash[:12] in problem
    finally:
        db.close()
