"""Signs requests with botocore's SigV4Auth (an implementation independent of
fhirstore's) and sends them; prints one JSON line per request with the status.

usage: botocore_client.py BASE_URL REGION  (requests as JSON lines on stdin:
{"method": ..., "path": ..., "body": ..., "session_token": ...}; credentials
from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
"""
import json
import os
import sys
import urllib.request
import urllib.error

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main():
    base, region = sys.argv[1], sys.argv[2]
    for line in sys.stdin:
        req = json.loads(line)
        creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
                            req.get("session_token") or None)
        body = req.get("body")
        data = body.encode("utf-8") if body is not None else None
        headers = {}
        if data is not None:
            headers["Content-Type"] = "application/fhir+json"
        aws = AWSRequest(method=req["method"], url=base + req["path"], data=data, headers=headers)
        SigV4Auth(creds, "healthlake", region).add_auth(aws)
        prepared = aws.prepare()
        http_req = urllib.request.Request(prepared.url, data=data, method=prepared.method,
                                          headers=dict(prepared.headers.items()))
        try:
            with urllib.request.urlopen(http_req) as resp:
                status, out = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, out = e.code, e.read()
        print(json.dumps({"status": status, "body": out.decode("utf-8")}), flush=True)


if __name__ == "__main__":
    main()
