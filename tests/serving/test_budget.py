"""A worker's decode budget: requests reserve what their photo costs to decode, wait for room, or get a 503."""

from __future__ import annotations

import io
import threading
import time

import cv2
import numpy as np
import pytest

from serving.budget import BudgetBusy, DecodeBudget


def test_reservations_wait_for_room_and_never_exceed_the_budget():
    budget = DecodeBudget(100, wait=5.0)
    assert budget.reserve(60) == 60 and budget.used == 60
    got = []
    waiter = threading.Thread(target=lambda: got.append(budget.reserve(50)))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and budget.used == 60  # 60 + 50 > 100: it waits
    budget.release(60)
    waiter.join(5)
    assert got == [50] and budget.used == 50 and budget.peak == 60


def test_a_full_budget_refuses_after_its_wait_and_one_request_over_it_alone_still_runs():
    budget = DecodeBudget(100, wait=0.1)
    held = budget.reserve(80)
    with pytest.raises(BudgetBusy, match="decode budget"):
        budget.reserve(30)
    budget.release(held)
    assert budget.reserve(10_000) == 100  # counted as the whole budget: alone, it is decoded
    with pytest.raises(ValueError):
        DecodeBudget(0)


def test_the_app_answers_503_with_retry_after_while_the_budget_is_full_and_gives_it_back(index_folder):
    from serving import create_app

    app = create_app({"SHOWROOM_INDEX": str(index_folder), "TESTING": True, "SHOWROOM_RATE_LIMIT": "",
                      "SHOWROOM_DECODE_BUDGET": 10 * 2 ** 20, "SHOWROOM_DECODE_WAIT": 0.2})
    budget = app.extensions["showroom_decode_budget"]
    photo = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))[1].tobytes()

    def search():
        return app.test_client().post("/api/search", data={"image": (io.BytesIO(photo), "p.jpg")}, content_type="multipart/form-data")

    assert search().status_code == 200 and budget.used == 0 and budget.peak >= 640 * 480 * 7  # reserved, then given back
    held = budget.reserve(budget.total)
    r = search()
    assert r.status_code == 503 and r.headers["Retry-After"] == "2" and "busy decoding" in r.get_json()["error"]
    budget.release(held)
    assert search().status_code == 200 and budget.used == 0
