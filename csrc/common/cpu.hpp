// Run-time CPU target selection. ISA-free: nothing here needs special compiler flags.
#pragma once
#include <string>
#include <vector>

namespace pyperfcore {

// Ordered: a kernel uses the highest variant it provides that is <= the active target.
enum class CpuTarget : int { scalar = 0, avx2 = 1, avx512 = 2, avx512_vnni = 3 };

const char* target_name(CpuTarget t);
// Returns false when `name` is not one of scalar, avx2, avx512, avx512_vnni.
bool parse_target(const std::string& name, CpuTarget* out);
// Every target compiled into this binary (all four on x86-64, scalar elsewhere).
std::vector<CpuTarget> compiled_targets();
// Whether this CPU (and OS) can execute code of target `t`.
bool cpu_supports(CpuTarget t);
std::vector<CpuTarget> supported_targets();
CpuTarget best_supported_target();
// The target kernels dispatch to. Resolved once: PYPERFCORE_CPU_TARGET if set (throws
// std::invalid_argument if unknown or unsupported here), else the best supported target.
CpuTarget active_target();
// Forces the active target; throws std::invalid_argument if this CPU cannot run it.
void set_active_target(CpuTarget t);

}  // namespace pyperfcore
