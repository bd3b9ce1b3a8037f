"""The question-answering reference: Transformers 4.57.1's QuestionAnsweringPipeline algorithm (its fast-tokenizer
path: preprocess, select_starts_ends, decode_spans, postprocess, get_indices), which Transformers 5 removed,
run here on 5.23's fast tokenizer (windows from the tokenizers library) and PyTorch model. The functions
below follow transformers/pipelines/question_answering.py of 4.57.1 (Apache-2.0) line for line, less its
TF branches and its slow-tokenizer path. ALBERT is fed token_type_ids, as 4.57's tokenizer returned them."""

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


def reference_qa(src, question, context, **options):
    return loaded(src)(question, context, **options)


def loaded(src):
    """The pipeline on the checkpoint at `src`: a function (question, context, **options) -> its answer(s)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(src))
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(src)).eval()
    return lambda question, context, **options: answer(tokenizer, model, question, context, **options)


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
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    if len(answers) == 1:
        return answers[0]
    return answers
