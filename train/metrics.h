// The records a run writes about itself: metrics.jsonl (one JSON object per line, appended
// while training: "train", "eval" and "skipped_step" records) and the pruning block of
// training_metrics.json. The envelope of training_metrics.json is written by the loop
// (train/loop.cpp) and documented in docs/formats.md.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/settings.h"

namespace knlp {

class Pruner;

// training_metrics.json's "schema": the envelope every family shares.
inline constexpr const char *k_metrics_schema = "knlp.training_metrics/2";

// Append one record to RUN/metrics.jsonl (CONFIG_TRACKER_JSONL and _TENSORBOARD) and, with
// CONFIG_TRACKER_TENSORBOARD, to the run's TensorBoard events file: every number of the record
// as the scalar "<type>/<field>", a "sample" record's text as "samples/<prompt>", a "config"
// record's text as "config" (core/tfevents.h). Invalid UTF-8 in text is replaced in the JSON.
void log_record(const std::string &run_dir, const TrackingSettings &t, const nlohmann::json &rec);

// With CONFIG_TRACKER_TENSORBOARD, the resolved configuration as the text "config" at step 0 of
// a new run's events file.
void log_config(const std::string &run_dir, const TrackingSettings &t, const std::string &text);

// Keep metrics.jsonl consistent with a resumed checkpoint: drop records past `step` (and a
// torn last line).
void truncate_jsonl(const std::string &path, int64_t step);

// Both of a run folder's logs (metrics.jsonl and the events file) cut back to `step`.
void truncate_records(const std::string &run_dir, int64_t step);

// The "pruning" record of training_metrics.json ({"method": "none"} when pruning is off).
nlohmann::json pruning_summary(const Pruner &p);

} // namespace knlp
