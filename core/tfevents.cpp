#include "core/tfevents.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

namespace {

constexpr std::array<uint32_t, 256> crc_table()
{
	std::array<uint32_t, 256> t{};
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1; // Castagnoli, reflected
		t[i] = c;
	}
	return t;
}
constexpr auto k_crc = crc_table();

// Protocol-buffer wire format: just what Event, Summary and TensorProto need.
void varint(std::string &out, uint64_t v)
{
	while (v >= 0x80) {
		out.push_back(static_cast<char>((v & 0x7f) | 0x80));
		v >>= 7;
	}
	out.push_back(static_cast<char>(v));
}
void key(std::string &out, int field, int wire)
{
	varint(out, (static_cast<uint64_t>(field) << 3) | wire);
}
void bytes_field(std::string &out, int field, std::string_view b)
{
	key(out, field, 2);
	varint(out, b.size());
	out.append(b);
}
template <class T> void fixed(std::string &out, T v)
{
	char b[sizeof(T)];
	std::memcpy(b, &v, sizeof(T)); // little-endian hosts only (x86-64, aarch64)
	out.append(b, sizeof(T));
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
std::string event(double wall_time, int64_t step, const std::string *summary, std::string_view version = {})
{
	std::string e;
	key(e, 1, 1);
	fixed(e, wall_time);
	if (step != 0) {
		key(e, 2, 0);
		varint(e, static_cast<uint64_t>(step));
	}
	if (!version.empty())
		bytes_field(e, 3, version);
	if (summary)
		bytes_field(e, 5, *summary);
	return e;
}

double now_seconds()
{
	using namespace std::chrono;
	return duration<double>(system_clock::now().time_since_epoch()).count();
}

uint64_t get_varint(std::string_view s, size_t &i)
{
	uint64_t v = 0;
	for (int shift = 0; i < s.size() && shift < 64; shift += 7) {
		auto b = static_cast<uint8_t>(s[i++]);
		v |= static_cast<uint64_t>(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	throw Error("truncated varint");
}

// The step of a serialized Event (0 when absent).
int64_t event_step(std::string_view e)
{
	size_t i = 0;
	while (i < e.size()) {
		uint64_t k = get_varint(e, i);
		int field = static_cast<int>(k >> 3), wire = static_cast<int>(k & 7);
		if (field == 2 && wire == 0)
			return static_cast<int64_t>(get_varint(e, i));
		if (wire == 0)
			get_varint(e, i);
		else if (wire == 1)
			i += 8;
		else if (wire == 5)
			i += 4;
		else if (wire == 2)
			i += get_varint(e, i);
		else
			throw Error("unsupported wire type");
	}
	return 0;
}

} // namespace

uint32_t crc32c(std::string_view data, uint32_t crc)
{
	crc = ~crc;
	for (unsigned char c : data)
		crc = k_crc[(crc ^ c) & 0xff] ^ (crc >> 8);
	return ~crc;
}

uint32_t tfrecord_mask(uint32_t crc)
{
	return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(std::string_view payload)
{
	std::string r, len;
	fixed(len, static_cast<uint64_t>(payload.size()));
	r += len;
	fixed(r, tfrecord_mask(crc32c(len)));
	r.append(payload);
	fixed(r, tfrecord_mask(crc32c(payload)));
	return r;
}

std::string tf_event_file_version(double wall_time)
{
	return event(wall_time, 0, nullptr, "brain.Event:2");
}

std::string tf_event_scalar(double wall_time, int64_t step, std::string_view tag, float value)
{
	std::string v; // Summary.Value { string tag = 1; float simple_value = 2; }
	bytes_field(v, 1, tag);
	key(v, 2, 5);
	fixed(v, value);
	std::string s; // Summary { repeated Value value = 1; }
	bytes_field(s, 1, v);
	return event(wall_time, step, &s);
}

std::string tf_event_text(double wall_time, int64_t step, std::string_view tag, std::string_view text)
{
	std::string plugin; // PluginData { string plugin_name = 1; }
	bytes_field(plugin, 1, "text");
	std::string meta; // SummaryMetadata { PluginData plugin_data = 1; }
	bytes_field(meta, 1, plugin);
	std::string tensor; // TensorProto { DataType dtype = 1 (DT_STRING = 7); repeated bytes string_val = 8; }
	key(tensor, 1, 0);
	varint(tensor, 7);
	bytes_field(tensor, 8, text);
	std::string v; // Summary.Value { tag = 1; TensorProto tensor = 8; SummaryMetadata metadata = 9; }
	bytes_field(v, 1, tag);
	bytes_field(v, 8, tensor);
	bytes_field(v, 9, meta);
	std::string s;
	bytes_field(s, 1, v);
	return event(wall_time, step, &s);
}

std::string find_tfevents(const std::string &dir)
{
	std::error_code ec;
	std::string best;
	for (const auto &e : std::filesystem::directory_iterator(dir, ec)) {
		std::string name = e.path().filename().string();
		if (name.rfind("events.out.tfevents.", 0) == 0 && name.find(".tmp") == std::string::npos &&
		    (best.empty() || name < std::filesystem::path(best).filename().string()))
			best = e.path().string();
	}
	return best;
}

const std::string &TfEventsWriter::path()
{
	if (path_.empty())
		path_ = find_tfevents(dir_);
	if (path_.empty()) {
		char host[256] = "localhost";
		gethostname(host, sizeof host - 1);
		double t = now_seconds();
		path_ = join_path(dir_, fmt::format("events.out.tfevents.{}.{}", static_cast<int64_t>(t), host));
		write_file_atomic(path_, tfrecord(tf_event_file_version(t)));
	}
	return path_;
}

void TfEventsWriter::append(const std::string &event)
{
	std::ofstream f(path(), std::ios::app | std::ios::binary);
	f << tfrecord(event);
	if (!f)
		throw Error(fmt::format("{}: cannot append a TensorBoard event", path()));
}

void TfEventsWriter::scalar(int64_t step, std::string_view tag, double value)
{
	append(tf_event_scalar(now_seconds(), step, tag, static_cast<float>(value)));
}

void TfEventsWriter::text(int64_t step, std::string_view tag, std::string_view text)
{
	append(tf_event_text(now_seconds(), step, tag, text));
}

void truncate_tfevents(const std::string &path, int64_t step)
{
	if (path.empty() || !file_exists(path))
		return;
	const std::string data = read_file(path);
	std::string kept;
	size_t i = 0;
	while (i + 12 <= data.size()) {
		uint64_t len;
		uint32_t len_crc;
		std::memcpy(&len, data.data() + i, 8);
		std::memcpy(&len_crc, data.data() + i + 8, 4);
		if (tfrecord_mask(crc32c(std::string_view(data.data() + i, 8))) != len_crc || len > data.size() ||
		    i + 12 + len + 4 > data.size())
			break; // torn or damaged: the rest goes
		std::string_view payload(data.data() + i + 12, len);
		uint32_t crc;
		std::memcpy(&crc, data.data() + i + 12 + len, 4);
		if (tfrecord_mask(crc32c(payload)) != crc)
			break;
		int64_t s;
		try {
			s = event_step(payload);
		} catch (const Error &) {
			break;
		}
		if (s <= step)
			kept.append(data, i, 12 + len + 4);
		i += 12 + len + 4;
	}
	if (kept.size() != data.size())
		write_file_atomic(path, kept);
}

} // namespace knlp
