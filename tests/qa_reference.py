"""The question-answering reference: Transformers 4.57.1's QuestionAnsweringPipeline algorithm (its fast-tokenizer
path: preprocess, select_starts_ends, decode_spans, postprocess, get_indices), which Transformers 5 removed,
run here on 5.23's fast tokenizer (windows from the tokenizers library) and PyTorch model. The functions
below follow transformers/pipelines/question_answering.py of 4.57.1 (Apache-2.0) line for line, less its
TF branches. ALBERT is fed token_type_ids, as 4.57's tokenizer returned them. `slow_answer` is its
slow-tokenizer path (XLM's), with squad_convert_example_to_features of transformers/data/processors/squad.py
(4.57.1) for one example at inference, on 5.23's Python XLMTokenizer; the model gets that tokenizer's
model_input_names (input_ids, attention_mask: no token types)."""

from __future__ import annotations

import numpy as np
import torch
import transformers


def decode_spans(start, end, topk, max_answer_len, undesired_tokens):
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    desired_spans = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def select_starts_ends(start, end, p_mask, attention_mask, min_null_score=1000000, top_k=1,
                       handle_impossible_answer=False, max_answer_len=15):
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def get_indices(enc, s, e, sequence_index, align_to_words):
    if align_to_words:
        try:
            start_word = enc.token_to_word(s)
            end_word = enc.token_to_word(e)
            start_index = enc.word_to_chars(start_word, sequence_index=sequence_index)[0]
            end_index = enc.word_to_chars(end_word, sequence_index=sequence_index)[1]
        except Exception:
            start_index = enc.offsets[s][0]
            end_index = enc.offsets[e][1]
    else:
        start_index = enc.offsets[s][0]
        end_index = enc.offsets[e][1]
    return start_index, end_index


def ranked(answers, handle_impossible_answer, min_null_score, top_k):
    """postprocess's end, after either tokenizer path."""
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    if len(answers) == 1:
        return answers[0]
    return answers


def reference_qa(src, question, context, **options):
    return loaded(src)(question, context, **options)


def loaded(src):
    """The pipeline on the checkpoint at `src`: a function (question, context, **options) -> its answer(s)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(src))
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(src)).eval()
    path = answer if tokenizer.is_fast else slow_answer
    return lambda question, context, **options: path(tokenizer, model, question, context, **options)


def answer(tokenizer, model, question, context, top_k=1, doc_stride=None, max_answer_len=15, max_seq_len=None,
           handle_impossible_answer=False, align_to_words=True):
    if max_seq_len is None:
        max_seq_len = min(tokenizer.model_max_length, 384)
    if doc_stride is None:
        doc_stride = min(max_seq_len // 2, 128)
    encoded_inputs = tokenizer(text=question, text_pair=context, padding="do_not_pad", truncation="only_second",
                               max_length=max_seq_len, stride=doc_stride, return_token_type_ids=True,
                               return_overflowing_tokens=True, return_offsets_mapping=True,
                               return_special_tokens_mask=True)
    num_spans = len(encoded_inputs["input_ids"])
    p_mask = [[tok != 1 for tok in encoded_inputs.sequence_ids(span_id)] for span_id in range(num_spans)]
    min_null_score = 1000000
    answers = []
    for span_idx in range(num_spans):
        ids = encoded_inputs["input_ids"][span_idx]
        for cls_index in np.nonzero(np.array(ids) == tokenizer.cls_token_id)[0]:
            p_mask[span_idx][cls_index] = 0
        inputs = {"input_ids": torch.tensor([ids]),
                  "attention_mask": torch.tensor([encoded_inputs["attention_mask"][span_idx]])}
        if type(tokenizer).__name__.startswith("Albert"):
            inputs["token_type_ids"] = torch.tensor([encoded_inputs["token_type_ids"][span_idx]])
        with torch.no_grad():
            output = model(**inputs)
        attention_mask = inputs["attention_mask"].numpy()
        pre_topk = top_k * 2 + 10 if align_to_words else top_k
        starts, ends, scores, min_null_score = select_starts_ends(
            output.start_logits.numpy(), output.end_logits.numpy(), np.array([p_mask[span_idx]]), attention_mask,
            min_null_score, pre_topk, handle_impossible_answer, max_answer_len)
        enc = encoded_inputs[span_idx]
        for s, e, score in zip(starts, ends, scores):
            start_index, end_index = get_indices(enc, s, e, 1, align_to_words)
            target_answer = context[start_index:end_index]
            answer = next((a for a in answers if a["answer"].lower() == target_answer.lower()), None)
            if answer:
                answer["score"] += score.item()
            else:
                answers.append({"score": score.item(), "start": start_index, "end": end_index,
                                "answer": context[start_index:end_index]})
    return ranked(answers, handle_impossible_answer, min_null_score, top_k)


def _is_whitespace(c):
    return c == " " or c == "\t" or c == "\r" or c == "\n" or ord(c) == 0x202F


def squad_example(context_text):
    """SquadExample's doc_tokens and char_to_word_offset."""
    doc_tokens, char_to_word_offset, prev_is_whitespace = [], [], True
    for c in context_text:
        if _is_whitespace(c):
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                doc_tokens.append(c)
            else:
                doc_tokens[-1] += c
            prev_is_whitespace = False
        char_to_word_offset.append(len(doc_tokens) - 1)
    return doc_tokens, char_to_word_offset


def encode_pair_only_second(tokenizer, ids, pair_ids, max_length, stride):
    """4.57's slow `encode_plus(ids, pair_ids, truncation="only_second", padding="max_length",
    return_overflowing_tokens=True, stride=stride, return_token_type_ids=True)` (prepare_for_model with
    truncate_sequences' only_second branch, right side)."""
    total_len = len(ids) + len(pair_ids) + (tokenizer.model_max_length - tokenizer.max_len_sentences_pair)
    overflowing_tokens = []
    num_tokens_to_remove = total_len - max_length
    if num_tokens_to_remove > 0:
        assert len(pair_ids) > num_tokens_to_remove
        window_len = min(len(pair_ids), stride + num_tokens_to_remove)
        overflowing_tokens = pair_ids[-window_len:]
        pair_ids = pair_ids[:-num_tokens_to_remove]
    input_ids = tokenizer.build_inputs_with_special_tokens(ids, pair_ids)
    token_type_ids = len([tokenizer.bos_token_id] + ids + [tokenizer.sep_token_id]) * [0] + \
        len(pair_ids + [tokenizer.sep_token_id]) * [1]  # (XLM's create_token_type_ids_from_sequences)
    attention_mask = [1] * len(input_ids)
    difference = max_length - len(input_ids)
    return {"input_ids": input_ids + [tokenizer.pad_token_id] * difference,
            "token_type_ids": token_type_ids + [0] * difference,
            "attention_mask": attention_mask + [0] * difference,
            "overflowing_tokens": overflowing_tokens}


def whitespace_tokenize(text):
    text = text.strip()
    return text.split() if text else []


def improve_answer_span(doc_tokens, input_start, input_end, tokenizer, orig_answer_text):
    tok_answer_text = " ".join(tokenizer.tokenize(orig_answer_text))
    for new_start in range(input_start, input_end + 1):
        for new_end in range(input_end, new_start - 1, -1):
            text_span = " ".join(doc_tokens[new_start: (new_end + 1)])
            if text_span == tok_answer_text:
                return (new_start, new_end)
    return (input_start, input_end)


def squad_features(tokenizer, question_text, doc_tokens, max_seq_length, doc_stride, max_query_length,
                   is_training=False, example=None):
    """squad_convert_example_to_features, right padding side; `example` (training): SquadExample's
    start_position, end_position (word indices), answer_text, is_impossible."""
    if is_training and not example["is_impossible"]:
        start_position, end_position = example["start_position"], example["end_position"]
        actual_text = " ".join(doc_tokens[start_position: (end_position + 1)])
        cleaned_answer_text = " ".join(whitespace_tokenize(example["answer_text"]))
        if actual_text.find(cleaned_answer_text) == -1:
            return []
    tok_to_orig_index, orig_to_tok_index, all_doc_tokens = [], [], []
    for i, token in enumerate(doc_tokens):
        orig_to_tok_index.append(len(all_doc_tokens))
        for sub_token in tokenizer.tokenize(token):
            tok_to_orig_index.append(i)
            all_doc_tokens.append(sub_token)
    if is_training and not example["is_impossible"]:
        tok_start_position = orig_to_tok_index[start_position]
        if end_position < len(doc_tokens) - 1:
            tok_end_position = orig_to_tok_index[end_position + 1] - 1
        else:
            tok_end_position = len(all_doc_tokens) - 1
        (tok_start_position, tok_end_position) = improve_answer_span(
            all_doc_tokens, tok_start_position, tok_end_position, tokenizer, example["answer_text"])
    spans = []
    truncated_query = tokenizer.encode(question_text, add_special_tokens=False, truncation=True,
                                       max_length=max_query_length)
    sequence_added_tokens = tokenizer.model_max_length - tokenizer.max_len_single_sentence
    sequence_pair_added_tokens = tokenizer.model_max_length - tokenizer.max_len_sentences_pair
    span_doc_tokens = tokenizer.convert_tokens_to_ids(all_doc_tokens)  # (4.57 passed the token strings)
    while len(spans) * doc_stride < len(all_doc_tokens):
        encoded_dict = encode_pair_only_second(
            tokenizer, truncated_query, span_doc_tokens, max_seq_length,
            stride=max_seq_length - doc_stride - len(truncated_query) - sequence_pair_added_tokens)
        paragraph_len = min(len(all_doc_tokens) - len(spans) * doc_stride,
                            max_seq_length - len(truncated_query) - sequence_pair_added_tokens)
        token_to_orig_map = {}
        for i in range(paragraph_len):
            index = len(truncated_query) + sequence_added_tokens + i
            token_to_orig_map[index] = tok_to_orig_index[len(spans) * doc_stride + i]
        encoded_dict["token_to_orig_map"] = token_to_orig_map
        encoded_dict["start"] = len(spans) * doc_stride
        encoded_dict["length"] = paragraph_len
        spans.append(encoded_dict)
        if len(encoded_dict["overflowing_tokens"]) == 0:
            break
        span_doc_tokens = encoded_dict["overflowing_tokens"]
    features = []
    for span in spans:
        cls_index = span["input_ids"].index(tokenizer.cls_token_id)
        p_mask = np.ones_like(span["token_type_ids"])
        p_mask[len(truncated_query) + sequence_added_tokens:] = 0
        pad_token_indices = np.where(np.atleast_1d(np.array(span["input_ids"]) == tokenizer.pad_token_id))
        special_token_indices = np.asarray(
            tokenizer.get_special_tokens_mask(span["input_ids"], already_has_special_tokens=True)).nonzero()
        p_mask[pad_token_indices] = 1
        p_mask[special_token_indices] = 1
        p_mask[cls_index] = 0
        span_is_impossible = is_training and example["is_impossible"]
        start_position = 0
        end_position = 0
        if is_training and not span_is_impossible:
            doc_start = span["start"]
            doc_end = span["start"] + span["length"] - 1
            if not (tok_start_position >= doc_start and tok_end_position <= doc_end):
                start_position = cls_index
                end_position = cls_index
            else:
                doc_offset = len(truncated_query) + sequence_added_tokens
                start_position = tok_start_position - doc_start + doc_offset
                end_position = tok_end_position - doc_start + doc_offset
        features.append({**span, "p_mask": p_mask.tolist(), "start_position": start_position,
                         "end_position": end_position})
    return features


def squad_train_features(tokenizer, question, context, answer, max_seq_length, doc_stride, max_query_length=64):
    """SquadExample (answer: (start character, text), or None: impossible) and its training features."""
    doc_tokens, char_to_word_offset = squad_example(context)
    example = {"is_impossible": answer is None}
    if answer is not None:
        start_char, text = answer
        example.update(answer_text=text, start_position=char_to_word_offset[start_char],
                       end_position=char_to_word_offset[min(start_char + len(text) - 1, len(char_to_word_offset) - 1)])
    return squad_features(tokenizer, question, doc_tokens, max_seq_length, doc_stride, max_query_length,
                          is_training=True, example=example)


def slow_answer(tokenizer, model, question, context, top_k=1, doc_stride=None, max_answer_len=15, max_seq_len=None,
                max_question_len=64, handle_impossible_answer=False, align_to_words=True):
    if max_seq_len is None:
        max_seq_len = min(tokenizer.model_max_length, 384)
    if doc_stride is None:
        doc_stride = min(max_seq_len // 2, 128)
    doc_tokens, char_to_word_offset = squad_example(context)
    features = squad_features(tokenizer, question, doc_tokens, max_seq_len, doc_stride, max_question_len)
    min_null_score = 1000000
    answers = []
    for feature in features:
        inputs = {k: torch.tensor([feature[k]]) for k in tokenizer.model_input_names}
        with torch.no_grad():
            output = model(**inputs)
        pre_topk = top_k * 2 + 10 if align_to_words else top_k
        starts, ends, scores, min_null_score = select_starts_ends(
            output.start_logits.numpy(), output.end_logits.numpy(), np.array([feature["p_mask"]]),
            np.array([feature["attention_mask"]]), min_null_score, pre_topk, handle_impossible_answer, max_answer_len)
        char_to_word = np.array(char_to_word_offset)
        token_to_orig_map = feature["token_to_orig_map"]
        for s, e, score in zip(starts, ends, scores):
            if s not in token_to_orig_map or e not in token_to_orig_map:
                continue  # (4.57: KeyError; kzoo leaves the span out)
            end_chars = np.where(char_to_word == token_to_orig_map[e])[0]
            answers.append({
                "score": score.item(),
                "start": np.where(char_to_word == token_to_orig_map[s])[0][0].item(),
                # (4.57: end_chars[-1], the last whitespace after the word; kzoo: where the word ends)
                "end": end_chars[0].item() + len(doc_tokens[token_to_orig_map[e]]),
                "answer": " ".join(doc_tokens[token_to_orig_map[s]: token_to_orig_map[e] + 1]),
            })
    return ranked(answers, handle_impossible_answer, min_null_score, top_k)
