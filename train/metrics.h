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

// Append one record to RUN/metrics.jsonl (CONFIG_TRACKER_JSONL; nothing otherwise).
void append_jsonl(const std::string &run_dir, const TrackingSettings &t, const nlohmann::json &rec);

// Keep metrics.jsonl consistent with a resumed checkpoint: drop records past `step` (and a
// torn last line).
void truncate_jsonl(const std::string &path, int64_t step);

// The "pruning" record of training_metrics.json ({"method": "none"} when pruning is off).
nlohmann::json pruning_summary(const Pruner &p);

} // namespace knlp
