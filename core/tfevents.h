// TensorBoard event files (CONFIG_TRACKER_TENSORBOARD): the TFRecord framing (little-endian
// uint64 length, masked CRC-32C of the length, the bytes, masked CRC-32C of the bytes) around
// serialized tensorflow.Event messages, written without protobuf or TensorFlow. Scalars use
// Summary.Value.simple_value; text uses a DT_STRING tensor tagged for the "text" plugin, which
// TensorBoard shows under its Text tab. docs/formats.md describes the fields used.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace knlp {

// CRC-32C (Castagnoli) of `data`, and the TFRecord mask of a CRC.
uint32_t crc32c(std::string_view data, uint32_t crc = 0);
uint32_t tfrecord_mask(uint32_t crc);

// One framed record around `payload`.
std::string tfrecord(std::string_view payload);

// Serialized Event messages.
std::string tf_event_file_version(double wall_time);
std::string tf_event_scalar(double wall_time, int64_t step, std::string_view tag, float value);
std::string tf_event_text(double wall_time, int64_t step, std::string_view tag, std::string_view text);

// Appends events to the one events file of a run folder (events.out.tfevents.<seconds>.<host>,
// created with its file_version record on first use).
class TfEventsWriter {
public:
	explicit TfEventsWriter(std::string dir) : dir_(std::move(dir)) {}
	void scalar(int64_t step, std::string_view tag, double value);
	void text(int64_t step, std::string_view tag, std::string_view text);
	const std::string &path(); // the file (found or created)

private:
	void append(const std::string &event);
	std::string dir_, path_;
};

// The events file of `dir`, or "" when there is none.
std::string find_tfevents(const std::string &dir);

// Resume: keep the records of `path` whose Event step is <= `step` (the file_version record
// has step 0) and drop a torn last record; rewritten atomically. A record whose CRC does not
// match ends the kept part: everything after it is dropped too.
void truncate_tfevents(const std::string &path, int64_t step);

} // namespace knlp
