// Byte encodings of what crosses ranks each step: the intake broadcast (new requests, aborts,
// shutdown, prefix-cache flush) and the output records replica leaders send to rank 0. Little-endian, versionless:
// both ends are the same binary.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/request.h"

namespace dpa::engine {

std::vector<uint8_t> encode_intake(const std::vector<Request>& reqs, const std::vector<uint64_t>& aborts, bool shutdown,
                                   bool flush_cache = false);
void decode_intake(std::span<const uint8_t> blob, std::vector<Request>* reqs, std::vector<uint64_t>* aborts,
                   bool* shutdown, bool* flush_cache = nullptr);

std::vector<uint8_t> encode_outputs(const std::vector<TokenOutput>& outs);
std::vector<TokenOutput> decode_outputs(std::span<const uint8_t> blob);

}  // namespace dpa::engine
