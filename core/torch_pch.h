// Precompiled header for every libtorch translation unit (see CMakeLists.txt): parsing
// torch/torch.h costs ~15 s per file; with the PCH it is paid once per build.
#pragma once
#include <torch/torch.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <map>
