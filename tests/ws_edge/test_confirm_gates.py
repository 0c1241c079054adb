import asyncio

from ws_edge.confirm_gates import ConfirmGates


async def test_a_gate_opens_when_the_change_is_applied_and_is_shared():
    gates = ConfirmGates(timeout=30.0)
    applied = asyncio.get_running_loop().create_future()
    waiters = [asyncio.create_task(gates.confirmed([applied])) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters) and len(gates._gates) == 1
    applied.set_result(None)
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert gates._gates == {}


async def test_a_gate_opens_after_the_timeout_when_the_push_service_is_late():
    gates = ConfirmGates(timeout=0.05)
    never = asyncio.get_running_loop().create_future()
    await asyncio.wait_for(gates.confirmed([never]), 5)
    assert not never.done() and gates._gates == {}
