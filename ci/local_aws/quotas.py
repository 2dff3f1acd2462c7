"""Account quotas a test can set (launcher items 23-24).

moto's IAM `GetAccountSummary` reports fixed quotas (1,000 roles, 1,500 policies) and its Service
Quotas knows only VPC. A test makes an account "full" by setting a quota's value:

    POST /_local_aws/quotas  {"account": "123456789012", "service": "iam",
                              "code": "L-FE177D64", "value": 120, "region": "us-east-1"}

(`region` is optional: without it the value holds in every region.) IAM's codes set the
`RolesQuota` (L-FE177D64) and `PoliciesQuota` (L-E95E4862) of `GetAccountSummary`, as a raised
quota does in AWS; every value set is what `GetServiceQuota` answers for that service and code.
`DELETE /_local_aws/quotas` forgets every value set.
"""

import json

# (account, region or "*", service, code) -> value
OVERRIDES: dict = {}

IAM_SUMMARY_KEYS = {"L-FE177D64": "RolesQuota", "L-E95E4862": "PoliciesQuota"}

PATH = "/_local_aws/quotas"


def _value(account: str, region: str, service: str, code: str):
    for r in (region, "*"):
        v = OVERRIDES.get((account, r, service, code))
        if v is not None:
            return v
    return None


def handle(environ, start_response):
    """The test hook's endpoint; None when the request is not for it."""
    if environ.get("PATH_INFO") != PATH:
        return None
    method = environ.get("REQUEST_METHOD")
    if method == "DELETE":
        OVERRIDES.clear()
    elif method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            key = (str(body["account"]), str(body.get("region") or "*"), str(body["service"]), str(body["code"]))
            OVERRIDES[key] = float(body["value"])
        except (KeyError, ValueError, TypeError) as error:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [f"bad quota: {error}\n".encode()]
    else:
        start_response("405 Method Not Allowed", [("Content-Type", "text/plain")])
        return [b"POST or DELETE\n"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"quotas": len(OVERRIDES)}).encode()]


def install() -> None:
    from moto.iam.models import AccountSummary
    from moto.servicequotas.models import ServiceQuotasBackend

    plain_summary = AccountSummary.summary_map.fget
    plain_get = ServiceQuotasBackend.get_service_quota

    def summary_map(self):
        out = plain_summary(self)
        account = self._iam_backend.account_id
        for code, key in IAM_SUMMARY_KEYS.items():
            v = _value(account, "*", "iam", code)
            if v is not None:
                out[key] = int(v)
        return out

    def get_service_quota(self, service_code: str, quota_code: str):
        v = _value(self.account_id, self.region_name, service_code, quota_code)
        if v is None:
            return plain_get(self, service_code, quota_code)
        return {
            "ServiceCode": service_code,
            "QuotaCode": quota_code,
            "QuotaArn": f"arn:aws:servicequotas:{self.region_name}:{self.account_id}:{service_code}/{quota_code}",
            "Value": v,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": service_code == "iam",
        }

    AccountSummary.summary_map = property(summary_map)
    ServiceQuotasBackend.get_service_quota = get_service_quota
