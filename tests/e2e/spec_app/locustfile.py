from pytest_fanout.locust import FanoutUser, task


class Deliveries(FanoutUser):
    def check(self, response):
        # A success is the answer the declared routes make: 3 SKUs x 2 available, zone Z3.
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        return None if response.json() == {"available": 6, "zone": "Z3"} else response.text

    @task
    def deliver(self):
        self.get("/deliver/3")
