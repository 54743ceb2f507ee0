"""Test-only: EC2 has no capacity until a file exists. Put this directory on PYTHONPATH and set
FLEET_TEST_NO_CAPACITY_UNTIL to the file's path: every RunInstances of this process fails with
InsufficientInstanceCapacity (as EC2 answers; moto cannot) until the file is there
(tests/e2e/test_aws_capacity_wait_cli.py)."""
import os

_UNTIL = os.environ.get("FLEET_TEST_NO_CAPACITY_UNTIL")
if _UNTIL:
    import botocore.client
    from botocore.exceptions import ClientError

    _call = botocore.client.BaseClient._make_api_call

    def _make_api_call(self, operation_name, api_params):
        if operation_name == "RunInstances" and not os.path.exists(_UNTIL):
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity",
                                         "Message": "We currently do not have sufficient capacity in the "
                                                    "Availability Zone you requested."}}, operation_name)
        return _call(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = _make_api_call
