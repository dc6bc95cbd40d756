"""A route that raises (a 500, the cause only in the app's log, with a secret in it) and
its fix."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/boom")
async def boom() -> dict:
    raise ValueError("user_id is an int, the model wants str; token=sk-FIELDSECRETabcdef0123456789")


@app.get("/fixed")
async def fixed() -> dict:
    return {"user_id": "1"}
