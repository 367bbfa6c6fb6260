"""LoopInbox: callbacks posted by worker threads all run on the loop, each thread's in
the order it posted them, and before what the thread then schedules on the loop
directly and waits for (a streamed response: start_stream, then each chunk)."""

import asyncio
import threading

from hurricane.django.wsgi import LoopInbox


def test_every_callback_runs_on_the_loop_in_each_threads_order() -> None:
    loop = asyncio.new_event_loop()
    inbox = LoopInbox(loop)
    seen: dict[int, list[int]] = {}
    loop_thread: list[threading.Thread] = []

    def record(worker: int, number: int) -> None:
        loop_thread.append(threading.current_thread())
        seen.setdefault(worker, []).append(number)

    def work(worker: int) -> None:
        for number in range(2000):
            inbox.post(record, worker, number)
            if number % 100 == 99:

                async def write_chunk(number: int = number) -> None:
                    record(worker, -number)

                asyncio.run_coroutine_threadsafe(write_chunk(), loop).result(10)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]

    async def main() -> None:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)

    loop.run_until_complete(main())
    loop.close()
    assert set(loop_thread) == {threading.main_thread()}
    for worker in range(8):
        expected = []
        for number in range(2000):
            expected.append(number)
            if number % 100 == 99:
                expected.append(-number)
        assert seen[worker] == expected
