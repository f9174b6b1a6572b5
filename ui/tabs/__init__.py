"""One module per tab, in the order a person works: model, data, rewards, train, compare, export,
then the runs list. Each `build(ctx)` draws its tab inside the open `gr.Tab` and wires its events
to the manager; none of them computes anything itself."""
