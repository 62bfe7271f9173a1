#pragma once
// Optional shaping terms, each off by default in ds-reward.
//
// Length (RL.md §1.8, §2.2):
//  overlong  DAPO soft overlong punishment on a completion of `len` units with limit L_max and buffer
//            L_cache: 0 when len <= L_max - L_cache; ((L_max - L_cache) - len) / L_cache inside the buffer
//            (down to -1 at L_max); -1 beyond L_max.
//  kimi      Kimi k1.5 per group: with min/max length over the group's samples, lambda = 0.5 -
//            (len - min)/(max - min); a correct sample gets lambda, a wrong one min(0, lambda); all 0 when
//            every sample has the same length.
// Repetition (open-r1, "Demystifying long CoT" App. C.2): tokens are whitespace-separated words,
// ASCII-lower-cased, with each Han/kana/hangul character a token of its own; over the n-grams of tokens,
// penalty = (1 - unique/total) * max_penalty (max_penalty <= 0); 0 when there are fewer than n tokens.
#include <cstdint>
#include <string_view>
#include <vector>

namespace ds::rl {

double overlong_penalty(int64_t len, int64_t max_len, int64_t buffer);

// One value per sample; lens and correct have the same size.
std::vector<double> kimi_length_rewards(const std::vector<int64_t>& lens, const std::vector<bool>& correct);

// 1 - unique/total over the n-grams (0 when there are none): the share of repeated n-grams.
double repetition_ratio(std::string_view text, int n);
double repetition_penalty(std::string_view text, int n, double max_penalty);

}  // namespace ds::rl
