"""Benchmark the Ray runner: items/s with 1 vs 2 actors on a CPU-heavy stand-in, and the coordinator's cost per item.

Each item runs a fixed amount of single-threaded numpy work (matrix products; about 0.12 s of one core here) inside a
pool actor, through the real `RayRunner` coordinator — the same queue, dispatch and completion handling as production,
with a stand-in where the model would be. Scaling from 1 to 2 actors shows whether the coordinator keeps the workers
busy (target: >= 1.7x on 2 cores). The overhead is measured with work that returns at once, on 1 actor: the time per
item is then all coordinator and Ray round trip, and the coordinator thread's CPU time per item is what each item costs
the coordinator machine.

Everything is measured in this one run, on a private local Ray with one CPU per actor. Other work on the machine
takes CPU from the actors: each measurement prints the cores its actors actually got (from their processes' CPU time),
so a ratio below target can be told apart from a coordinator that leaves actors idle.

    python benchmarks/scale.py [--items 40] [--repeat 3] [--overhead-items 300]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import psutil

TARGET_RATIO = 1.7
SECRET = "benchmark-callback-secret-0123456789abcdef"  # the stand-in work never reports, but workers need a valid secret


class StandInModel:
    "What an actor loads once: fixed matrices. `run()` is a fixed amount of CPU work (one BLAS thread in a 1-CPU actor)."
    def __init__(self, size: int = 200, rounds: int = 400):
        rng = np.random.default_rng(0)
        self.a, self.b, self.rounds = rng.random((size, size)), rng.random((size, size)), rounds
        # Ray sets OMP_NUM_THREADS to the actor's CPUs (1) before numpy's BLAS starts: one thread per actor
        self.device = f"cpu, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"

    def run(self) -> float:
        total = 0.0
        for _ in range(self.rounds): total += float((self.a @ self.b).sum())
        return total


def heavy_work(task, model, transport) -> dict:
    model.run()
    return {"item": task.item, "status": "done"}


def no_work(task, model, transport) -> dict:
    return {"item": task.item, "status": "done"}


class Coordinator:
    "The part of the service a runner calls back; nothing here should ever be handed back."
    def __init__(self): self.handed_back = []
    def retry_task(self, job_id, item, error): self.handed_back.append((job_id, item, error)); return "failed"


def task(job_id: str, item: int):
    from s3lib.service import ItemTask
    return ItemTask(job_id=job_id, item=item, attempt=1, max_attempts=3, input_key=f"users/u/jobs/{job_id}/inputs/{item}",
                    result_key=f"users/u/jobs/{job_id}/results/{item}.png", rule={"name": "r", "domain": "interior", "edits": [],
                    "protect": []}, concepts=[], callback_url="http://127.0.0.1:9/unused", mask_threshold=0.5,
                    max_pixels=10**6, max_bytes=10**6)


def measure(actors: int, work, items: int, warmup: int) -> dict:
    "Start a pool, warm it up, then time `items` tasks from submission to the last completion."
    from s3lib.runners.ray import RayRunner
    coordinator = Coordinator()
    runner = RayRunner(SECRET, StandInModel, actors=actors, work=work)
    runner.start(coordinator)
    try:
        deadline = time.monotonic() + 120
        while sum(w["ready"] for w in runner.workers()) < actors:
            if time.monotonic() > deadline: raise SystemExit(f"the {actors} actor(s) did not start within 120 s")
            time.sleep(0.05)
        for i in range(warmup): runner.submit(task("warmup", i))
        runner.join(120)
        actors_cpu = lambda: sum(sum(psutil.Process(w["pid"]).cpu_times()[:2]) for w in runner.workers())
        cpu_before, actors_before = runner.stats().get("coordinator_cpu_seconds", 0.0), actors_cpu()
        started = time.perf_counter()
        for i in range(items): runner.submit(task("measured", i))
        if not runner.join(600): raise SystemExit(f"{items} items did not finish within 600 s: {runner.stats()}")
        seconds = time.perf_counter() - started
        stats, actors_after = runner.stats(), actors_cpu()
        if coordinator.handed_back: raise SystemExit(f"tasks were handed back: {coordinator.handed_back[:3]}")
        return {"seconds": seconds, "items_per_second": items / seconds, "device": runner.workers()[0]["device"],
                "cores": (actors_after - actors_before) / seconds,  # CPU the actors got from the machine, in cores
                "coordinator_cpu_per_item": (stats["coordinator_cpu_seconds"] - cpu_before) / items}
    finally:
        runner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=40, help="CPU-heavy items per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each pool size, alternating 1 and 2 actors")
    parser.add_argument("--overhead-items", type=int, default=300, help="no-op items for the coordinator overhead")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway loopback Ray: no token file in ~/.ray
    import ray
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} before the run; "
          f"Ray {ray.__version__}, a local Ray with 2 CPUs, 1 per actor")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ratios, efficiencies = [], []
        for round_ in range(1, args.repeat + 1):
            one = measure(1, heavy_work, args.items, warmup=2)
            two = measure(2, heavy_work, args.items, warmup=4)
            ratios.append(two["items_per_second"] / one["items_per_second"])
            efficiencies.append((two["items_per_second"] / two["cores"]) / (one["items_per_second"] / one["cores"]))
            print(f"round {round_}: 1 actor {one['items_per_second']:5.2f} items/s ({one['seconds']:.1f} s, actor got "
                  f"{one['cores']:.2f} cores), 2 actors {two['items_per_second']:5.2f} items/s ({two['seconds']:.1f} s, actors "
                  f"got {two['cores']:.2f} cores) -> {ratios[-1]:.2f}x  [{args.items} items; {one['device']}]")
        ratio = statistics.median(ratios)
        print(f"ratio 2 vs 1 actors (median of {len(ratios)}): {ratio:.2f}x, target >= {TARGET_RATIO}x -> "
              f"{'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
        print(f"per core the actors got: 1 actor {one['items_per_second'] / one['cores']:.2f} items/s, 2 actors "
              f"{two['items_per_second'] / two['cores']:.2f} items/s -> scaling efficiency {statistics.median(efficiencies):.2f} "
              f"(1.00 = the coordinator keeps both actors as busy as one; with 2 free cores the ratio would be about twice this)")
        print(f"stand-in work: {one['cores'] * one['seconds'] / args.items * 1000:.0f} ms of actor CPU per item")
        print(f"coordinator CPU per heavy item with 2 actors: {two['coordinator_cpu_per_item'] * 1000:.2f} ms")

        overhead = measure(1, no_work, args.overhead_items, warmup=20)
        print(f"coordinator overhead, no-op work on 1 actor ({args.overhead_items} items): "
              f"{1000 / overhead['items_per_second']:.2f} ms per item round trip (dispatch + Ray call + completion, "
              f"{overhead['items_per_second']:.0f} items/s), {overhead['coordinator_cpu_per_item'] * 1000:.2f} ms of "
              f"coordinator CPU per item")
        print(f"load average after the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
