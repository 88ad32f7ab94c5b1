"""Export a learned task graph: GraphML, GEXF, node-link JSON, DOT, CSV, a PNG, networkx, PyG.

Run: ``python examples/export_graph.py [--out runs/export] [--quick]``.

Trains a graph-learning learner (the first registered of gcnet, causal_graph, …) on a planted
task DAG, or — when none is registered — takes the graph found by the correlation baseline, then
writes the graph in every supported format, reads each loadable file (GraphML, GEXF, JSON) back
to check it round-trips (DOT for Graphviz and the CSV edge list are export-only), and shows the
in-memory conversions (networkx ``DiGraph``, PyG ``edge_index``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import taskgraph as tg
from taskgraph.graph import LOADABLE_FORMATS

FORMATS = ("graphml", "gexf", "json", "dot", "csv")
GRAPH_LEARNERS = ("gcnet", "causal_graph", "sgnn_ebm", "sgnn", "mtcrl")


def learned_graph(bench: tg.datasets.Benchmark, epochs: int, seed: int) -> tg.TaskGraph:
    registered = tg.learners.list()
    name = next((n for n in GRAPH_LEARNERS if n in registered), None)
    if name is not None:
        learner = tg.learners.create(name, bench.tasks, epochs=epochs, seed=seed, verbose=False)
        learner.fit(bench.train, val=bench.val)
        graph = learner.task_graph_
        if graph.learned:
            print(f"learned by {name}: {graph.n_edges} edges")
            return graph
    from taskgraph.structure import discover

    graph = discover(bench.train, method="corr", n_edges=bench.true_graph.n_edges)
    print(f"no graph learner registered: correlation baseline, {graph.n_edges} edges")
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/export", help="output folder")
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)

    bench = tg.datasets.planted_dag(n_tasks=6, n_edges=7, n_samples=500 if args.quick else 2000,
                                    seed=args.seed, n_test=200)
    graph = learned_graph(bench, 2 if args.quick else 10, args.seed)
    for src, dst, w in graph.edges():
        print(f"  {src} -> {dst}  weight {w:+.3f}")

    for fmt in FORMATS:
        path = graph.save(out / f"graph.{fmt}")
        if fmt not in LOADABLE_FORMATS:
            print(f"wrote {path} ({path.stat().st_size} bytes); export-only")
            continue
        back = tg.TaskGraph.load(path)
        same = back.names == graph.names and back.n_edges == graph.n_edges
        print(f"wrote {path} ({path.stat().st_size} bytes); reads back: "
              f"{'same nodes and edges' if same else 'DIFFERENT'}")
    graph.plot(out / "graph.png")
    print(f"wrote {out / 'graph.png'}")

    nxg = graph.to_networkx()
    print(f"networkx: {type(nxg).__name__} with {nxg.number_of_nodes()} nodes, "
          f"{nxg.number_of_edges()} edges; is a DAG: {graph.is_dag()}")
    edge_index = graph.to_edge_index()
    ei = edge_index[0] if isinstance(edge_index, tuple) else edge_index
    print(f"PyG edge_index: shape {tuple(ei.shape)} (row 0 = source task, row 1 = target)")


if __name__ == "__main__":
    main()
