#pragma once
// The tag layout of a completion: where the <think> blocks are, what lies outside them, and which
// <answer> blocks are complete. One linear scan (memchr for '<'), shared by answer extraction, the format
// reward, the language reward and the rejection filters, so that all of them agree on what "the
// chain of thought" and "the answer" are.
//
// Rules (documented in man/ds-reward.1):
//  - <think> opens a think block when none is open; a <think> inside an open block is plain text.
//    </think> closes the open block. An unclosed block runs to the end of the text (reasoning that never
//    finished: nothing after it is outside).
//  - A </think> before any <think> closes an implicit block that starts at the beginning of the text
//    (chat templates that prefill "<think>\n" leave the opening tag out of the completion). A later stray
//    </think> (no block open) is plain text.
//  - Answer tags count only outside think blocks. A complete answer block is an <answer> followed by an
//    </answer>; a second <answer> before the close restarts the block (the content is what follows the
//    nearest <answer>). The last complete block is the answer; an <answer> that is never closed
//    (truncated output) is no block.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace ds::rl {

enum class Tag : uint8_t { think_open, think_close, answer_open, answer_close };

struct TagHit {
  Tag tag;
  size_t pos;  // offset of '<'
};

size_t tag_length(Tag t);

// Every occurrence of the four tags, in text order (exact, case-sensitive spelling).
std::vector<TagHit> scan_tags(std::string_view s);

struct Span {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
  std::string_view of(std::string_view s) const { return s.substr(begin, end - begin); }
};

struct Layout {
  std::vector<TagHit> tags;
  std::vector<Span> think;    // content of each think block (without the tags)
  std::vector<Span> outside;  // text outside think blocks (between them), possibly empty spans
  std::vector<Span> answers;  // content of each complete answer block outside think blocks
  bool implicit_think = false;   // the first think tag was a </think>
  bool unclosed_think = false;   // the last think block never closed
  int n_think_open = 0, n_think_close = 0, n_answer_open = 0, n_answer_close = 0;
};

Layout analyse(std::string_view s);

}  // namespace ds::rl
