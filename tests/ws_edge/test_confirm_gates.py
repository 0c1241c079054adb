import asyncio

from ws_edge.confirm_gates import ConfirmGates


async def test_a_gate_opens_when_the_change_is_applied_and_is_shared():
    gates = ConfirmGates(timeout=30.0)
    applied = asyncio.get_running_loop().create_future()
    answered: list[int] = []
    for n in range(3):
        assert gates.when_confirmed([applied], lambda n=n: answered.append(n)) is False
    await asyncio.sleep(0)
    assert answered == [] and len(gates._gates) == 1
    applied.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert answered == [0, 1, 2] and gates._gates == {} and not gates.timed_out(applied)


async def test_changes_applied_already_answer_at_once_without_a_callback():
    gates = ConfirmGates(timeout=30.0)
    applied = asyncio.get_running_loop().create_future()
    applied.set_result(None)
    assert gates.when_confirmed([applied], lambda: never_called()) is True
    assert gates.when_confirmed([], lambda: never_called()) is True
    assert gates._gates == {}


async def test_the_answer_comes_once_after_every_change_is_applied():
    gates = ConfirmGates(timeout=30.0)
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    answered: list[str] = []
    assert gates.when_confirmed([first, second], lambda: answered.append("both")) is False
    first.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert answered == []
    second.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert answered == ["both"]


async def test_a_gate_opens_after_the_timeout_when_the_push_service_is_late():
    gates = ConfirmGates(timeout=0.05)
    never = asyncio.get_running_loop().create_future()
    answered = asyncio.get_running_loop().create_future()
    assert gates.when_confirmed([never], lambda: answered.set_result(None)) is False
    await asyncio.wait_for(answered, 5)
    assert not never.done() and gates._gates == {}
    assert gates.timed_out(never)  # someone was answered without it
    never.set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not gates.timed_out(never) and gates._late == set()  # applied: forgotten


def never_called() -> None:
    raise AssertionError("called although every change was applied")


async def test_confirmed_is_the_awaitable_form():
    gates = ConfirmGates(timeout=30.0)
    applied = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(gates.confirmed([applied]))
    await asyncio.sleep(0)
    assert not waiter.done()
    applied.set_result(None)
    await asyncio.wait_for(waiter, 5)
    await asyncio.wait_for(gates.confirmed([applied]), 5)  # applied already: at once
