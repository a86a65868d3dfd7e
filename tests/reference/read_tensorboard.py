"""Reads a TensorBoard log folder with TensorBoard's own EventAccumulator and prints JSON:
{"scalars": {tag: [[step, value], ...]}, "text": {tag: [[step, text], ...]},
 "histograms": [tag, ...], "plugins": [name, ...]}."""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(logdir):
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "text": {}, "histograms": sorted(tags.get("histograms", [])), "plugins": []}
    for tag in tags.get("scalars", []):
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags.get("tensors", []):
        events = acc.Tensors(tag)
        if events and events[0].tensor_proto.string_val:
            out["text"][tag] = [[e.step, e.tensor_proto.string_val[0].decode()] for e in events]
    out["plugins"] = sorted(acc.PluginAssets("text") and ["text"] or [])
    out["plugins"] = sorted(set(acc.summary_metadata[t].plugin_data.plugin_name for t in acc.summary_metadata))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
