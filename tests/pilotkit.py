"""Helpers for Pilot tests of the real app."""
import asyncio


async def wait_for(pilot, cond, timeout: float = 30.0):
    """Let the app run until cond() holds (screens load off the event loop, so results arrive later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out waiting for the app"
        await pilot.pause(0.02)
