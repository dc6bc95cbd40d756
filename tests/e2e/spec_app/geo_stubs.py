"""A stub handler named in [tool.fanout]: it computes the geo upstream's answer."""

from pytest_fanout import StubRequest


def zone(request: StubRequest) -> dict:
    return {"zone": f"Z{request.json()['skus']}"}
