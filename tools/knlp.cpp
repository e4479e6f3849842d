// knlp: one binary, many sub-commands. Settings come from .config at run time.
#include <climits>
#include <cstdio>
#include <cstring>
#include <unistd.h>

#include <c10/util/Exception.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "tools/commands.h"

namespace knlp {

std::string g_command_line;

void ConfigArgs::add_to(CLI::App *cmd)
{
	given = cmd->add_option("--config", path, "Configuration file (Linux .config format)")->capture_default_str();
	cmd->add_option("--set", sets, "Override one symbol: SYMBOL=VALUE (repeatable)");
}

std::string self_exe()
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n <= 0)
		fail("cannot find the knlp binary (/proc/self/exe)");
	buf[n] = 0;
	return buf;
}

Config ConfigArgs::load() const
{
	Config c = Config::load(path, mode);
	c.set_all(sets);
	return c;
}

} // namespace knlp

int main(int argc, char **argv)
{
	// Line-buffered even into a file, so logs (matrix output.log) keep the order of events.
	std::setvbuf(stdout, nullptr, _IOLBF, 0);
	for (int i = 0; i < argc; i++)
		knlp::g_command_line += (i ? " " : "") + std::string(argv[i]);
	CLI::App app{"knlp: kernel-style machine learning (Kconfig-described experiments on libtorch)"};
	app.require_subcommand(1);
	app.set_help_all_flag("--help-all", "Help for every sub-command");
	knlp::add_data_commands(app);
	knlp::add_run_command(app);
	knlp::add_train_commands(app);
	knlp::add_matrix_commands(app);
	knlp::add_attention_commands(app);
	knlp::add_quant_commands(app);
	knlp::add_gguf_commands(app);
	knlp::add_tier_commands(app);
	knlp::add_gnn_commands(app);
	knlp::add_stats_commands(app);
	knlp::add_dashboard_command(app);
	try {
		app.parse(argc, argv);
	} catch (const CLI::ParseError &e) {
		return app.exit(e);
	} catch (const knlp::Error &e) {
		std::fprintf(stderr, "knlp: error: %s\n", e.what());
		return 1;
	} catch (const c10::Error &e) {
		std::string msg = e.what_without_backtrace();
		msg = msg.substr(0, msg.find('\n'));
		std::fprintf(stderr, "knlp: error: libtorch: %s\n", msg.c_str());
		return 1;
	} catch (const std::exception &e) {
		std::fprintf(stderr, "knlp: error: %s\n", e.what());
		return 1;
	}
	return 0;
}
