"""What each `kzoo` command does: one function per command, `args` from kzoo.cli's parser."""

from __future__ import annotations

import sys

from kzoo.cli.output import print_json, progress_bar


def cmd_convert(args):
    from kzoo.converters.convert import convert

    with progress_bar("converting", enabled=not args.json) as progress:
        options = {"pretokenize_by_lang": True} if args.pretokenize_by_lang else None
        summary = convert(args.src, args.out, task=args.task, labels=args.labels, num_labels=args.num_labels,
                          problem_type=args.problem_type, overwrite=args.overwrite, progress=progress,
                          tokenizer_options=options)
    if args.json:
        return print_json(summary)
    preset = f" ({summary['preset']})" if summary["preset"] else ""
    print(f"{summary['out']}: {summary['architecture']} {summary['task']}{preset}, "
          f"{summary['parameters']:,} parameters from {summary['checkpoint_format']}; {summary['report']}")
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if not summary["tokenizer"]:
        print("note: the source has no tokenizer files; text commands will need them", file=sys.stderr)


def cmd_fill_mask(args):
    from kzoo.pipelines import FillMask

    result = FillMask(args.model)(args.text, top_k=args.top_k, lang=args.lang, truncation=args.truncation)
    if args.json:
        return print_json(result)
    groups = result if result and isinstance(result[0], list) else [result]
    for i, rows in enumerate(groups):
        if len(groups) > 1:
            print(f"mask {i + 1}:")
        for r in rows:
            print(f"  {r['score']:.4f}  {r['token_str']!r:<20} {r['sequence']}")


def cmd_embed(args):
    from kzoo import runtime
    from kzoo.pipelines import Features, PipelineError, SentenceEmbeddings

    runner = runtime.load(args.model)
    if runner.task == "sentence_embedding":  # a sentence-transformers model: its encode()
        vectors = SentenceEmbeddings(runner)(args.text, lang=args.lang, normalize_embeddings=args.normalize,
                                             prompt=args.prompt, prompt_name=args.prompt_name,
                                             truncate_dim=args.truncate_dim)
        if args.json:
            return print_json(vectors)
        for text, v in zip(args.text, vectors):
            print(f"{text!r}: [{len(v)}] = [{', '.join(f'{x:.4f}' for x in v[:4])}, ...]")
        return
    given = [flag for flag, value in (("--normalize", args.normalize), ("--prompt", args.prompt),
                                      ("--prompt-name", args.prompt_name), ("--truncate-dim", args.truncate_dim))
             if value not in (None, False)]
    if given:
        raise PipelineError(f"{given[0]} is for sentence vectors, and {args.model} is a {runner.task}, not a "
                            "sentence-transformers model")
    results = Features(runner)(args.text, lang=args.lang, truncation=args.truncation)
    if args.json:
        return print_json(results)
    for text, r in zip(args.text, results):
        seq = r["sequence_output"]
        line = f"{text!r}: {len(r['tokens'])} tokens, sequence_output {list(seq.shape)}"
        if "pooled_output" in r:
            p = r["pooled_output"]
            line += f", pooled_output [{p.shape[0]}] = [{', '.join(f'{v:.4f}' for v in p[:4])}, ...]"
        print(line)


def cmd_classify(args):
    from kzoo.pipelines import PipelineError, TextClassification

    if args.text_pair is not None and len(args.text_pair) != len(args.text):
        raise PipelineError(f"{len(args.text)} texts but {len(args.text_pair)} --text-pair texts (one each)")
    inputs = [{"text": t, "text_pair": p} for t, p in zip(args.text, args.text_pair)] if args.text_pair else args.text
    options = {"top_k": args.top_k} if hasattr(args, "top_k") else {}  # (absent: the best label only)
    results = TextClassification(args.model)(inputs, function_to_apply=args.function_to_apply, lang=args.lang,
                                             truncation=args.truncation, **options)
    if args.json:
        return print_json(results)
    for text, result in zip(args.text, results):
        rows = result if isinstance(result, list) else [result]
        print(f"{text!r}: " + ", ".join(f"{r['label']} {r['score']:.4f}" for r in rows))


def cmd_token_classify(args):
    from kzoo.pipelines import TokenClassification

    results = TokenClassification(args.model)(args.text, aggregation_strategy=args.aggregation_strategy,
                                              ignore_labels=args.ignore_labels, lang=args.lang)
    if args.json:
        return print_json(results)
    for text, entities in zip(args.text, results):
        print(f"{text!r}:")
        for e in entities:
            where = f"{e['start']}-{e['end']}" if e["start"] is not None else "-"
            print(f"  {e.get('entity_group', e.get('entity')):<10} {e['score']:.4f}  {where:<9} {e['word']!r}")


def cmd_qa(args):
    from kzoo.pipelines import QuestionAnswering

    options = {k: v for k, v in dict(top_k=args.top_k, doc_stride=args.doc_stride, max_answer_len=args.max_answer_len,
                                     max_seq_len=args.max_seq_len, max_question_len=args.max_question_len,
                                     lang=args.lang).items() if v is not None}
    result = QuestionAnswering(args.model)(question=args.question, context=args.context,
                                           handle_impossible_answer=args.handle_impossible_answer,
                                           align_to_words=not args.no_align_to_words, **options)
    if args.json:
        return print_json(result)
    for r in result if isinstance(result, list) else [result]:
        print(f"{r['score']:.4f}  {r['start']}-{r['end']}  {r['answer']!r}")


def cmd_zero_shot(args):
    from kzoo.pipelines import ZeroShotClassification

    results = ZeroShotClassification(args.model)(args.text, candidate_labels=args.candidate_labels,
                                                 hypothesis_template=args.hypothesis_template,
                                                 multi_label=args.multi_label, lang=args.lang)
    if args.json:
        return print_json(results)
    for r in results:
        print(f"{r['sequence']!r}: " + ", ".join(f"{label} {score:.4f}" for label, score in zip(r["labels"], r["scores"])))


def cmd_generate(args):
    from kzoo.pipelines.generation import GenerationError, Generator

    causal = {"causal": True, "bidirectional": False}.get(args.attention)
    beam = args.num_beams is not None or args.length_penalty is not None
    if beam and args.sampler not in (None, "beam"):
        raise GenerationError(f"--num-beams / --length-penalty are for beam search, not --sampler {args.sampler}")
    sampler = args.sampler or ("beam" if beam else "top-p" if args.top_p is not None
                               else "top-k" if args.top_k is not None else "greedy")
    result = Generator(args.model, causal=causal)(
        args.prompt, max_new_tokens=args.max_new_tokens, lang=args.lang, sampler=sampler,
        k=args.top_k if args.top_k is not None else 5, p=args.top_p if args.top_p is not None else 0.9,
        num_beams=args.num_beams if args.num_beams is not None else 4, temperature=args.temperature,
        seed=args.seed, ignore_eos=args.ignore_eos, add_special_tokens=not args.no_special_tokens,
        length_penalty=args.length_penalty if args.length_penalty is not None else 1.0)
    if args.json:
        return print_json(result)
    print(result["generated_text"])


def cmd_verify(args):
    from kzoo.converters.verify import verify

    try:
        import torch, transformers  # noqa: F401,E401
    except ImportError as e:
        print(f"kzoo: error: verify needs the PyTorch reference ({e}): pip install 'kzoo[reference]'",
              file=sys.stderr)
        return 2

    report = verify(args.model, args.reference)
    if args.json:
        print_json(report)
    else:
        print(f"{report['model']} against {report['reference']} (PyTorch), bound {report['bound']:g}")
        for r in report["rows"]:
            mark = "ok  " if r["ok"] else "FAIL"
            print(f"  {mark} {r['batch']:<16} {r['output']:<16} {str(r['shape']):<16} "
                  f"max abs diff {r['max_abs_diff']:.3e}")
        print("PASS" if report["ok"] else "FAIL")
    return 0 if report["ok"] else 1


def cmd_train(args):
    from kzoo.training import train

    options = dict(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                   warmup_ratio=args.warmup_ratio, scheduler=args.scheduler,
                   gradient_accumulation=args.gradient_accumulation, max_length=args.max_length,
                   doc_stride=args.doc_stride, seed=args.seed,
                   shuffle=not args.no_shuffle, lora_rank=args.lora_rank, mixed_precision=args.mixed_precision,
                   strategy=args.strategy, checkpoint_dir=args.checkpoint_dir, save_steps=args.save_steps)
    with progress_bar("training", enabled=not args.json) as progress:
        report = train(args.model, args.out, args.train, args.eval, overwrite=args.overwrite, progress=progress,
                       **options)
    if args.json:
        print_json(report)
        return 0
    last = report["log"][-1]
    where = report["out"] or "(a worker: the chief writes OUT)"
    print(f"{where}: {report['task']} trained {report['steps']} steps ({report['epochs']:g} epochs, "
          f"{report['examples']} examples), last loss {last['loss']:.4f}, {report['examples_per_second']:.1f} examples/s")
    for name, value in (report.get("eval") or {}).items():
        print(f"  eval {name}: {value:.4f}")
    return 0


def cmd_export_savedmodel(args):
    from kzoo.export import export_savedmodel

    with progress_bar("exporting SavedModel", enabled=not args.json) as progress:
        report = export_savedmodel(args.model, args.out, text=False if args.ids_only else None,
                                   top_k=args.top_k, max_masks=args.max_masks, max_answer_len=args.max_answer_len,
                                   max_length=args.max_length, overwrite=args.overwrite, progress=progress)
    if args.json:
        print_json(report)
        return 0 if report["ok"] else 1
    from kzoo.export.check import human_size

    print(f"{report['path']}: SavedModel (XLA), {human_size(report['bytes'])}")
    for name, sig in report["signatures"].items():
        print(f"  {name:<16} {', '.join(sig['inputs'])} -> {', '.join(sig['outputs'])}")
    evaluation = report["evaluation"]
    rows = {f"serving_default {k}": r for k, r in evaluation["serving_default"].items()}
    rows.update({f"serve_text {k}": r for k, r in evaluation.get("serve_text", {}).get("outputs", {}).items()})
    for name, r in rows.items():
        print(f"  against Keras fp32: {name:<28} max abs diff {r['max_abs_diff']:.2e}")
    if "serve_text" in evaluation:
        same = evaluation["serve_text"]["ids_equal_python_tokenizer"]
        print(f"  serve_text ids {'==' if same else '!='} the Python tokenizer's")
    print(f"{'PASS' if report['ok'] else 'FAIL'} (bound {evaluation['bound']:g}); report: {report['out']}.report.json")
    return 0 if report["ok"] else 1


def cmd_export_tflite(args):
    from kzoo.export import export_tflite

    with progress_bar(f"exporting TFLite ({args.quantize})", enabled=not args.json) as progress:
        report = export_tflite(args.model, args.out, quantize=args.quantize, calibration=args.calibration,
                               with_tokenizer=args.with_tokenizer, mask_bias=args.mask_bias, top_k=args.top_k,
                               max_masks=args.max_masks, max_answer_len=args.max_answer_len,
                               max_length=args.max_length, overwrite=args.overwrite, progress=progress)
    if args.json:
        print_json(report)
        return 0 if report["ok"] else 1
    evaluation = report["evaluation"]
    custom = f" + custom {', '.join(report['custom_ops'])}" if report["custom_ops"] else ""
    print(f"{report['out']}: {report['quantize']}, {report['size']}, {len(report['ops'])} ops, "
          f"builtin{custom}")
    for name, sig in report["signatures"].items():
        print(f"  {name:<16} {', '.join(sig['inputs'])} -> {', '.join(sig['outputs'])}")
    for name, r in evaluation["outputs"].items():
        per_token = "" if r["position_cosine_min"] == r["cosine_min"] else f"; per token {r['position_cosine_min']:.5f}"
        print(f"  against Keras fp32 ({evaluation['texts']} held-out texts): {name:<12} "
              f"max abs diff {r['max_abs_diff']:.2e}  cosine {r['cosine_min']:.5f} (min{per_token})  "
              f"top-1 {100 * r['top1_agreement']:.1f}%")
    if "ids_equal_python_tokenizer" in evaluation:
        same = evaluation["ids_equal_python_tokenizer"]
        print(f"  ids in the model {'==' if same else '!='} the Python tokenizer's")
    sense = "<=" if evaluation["metric"] == "max_abs_diff" else ">="
    print(f"{'PASS' if report['ok'] else 'FAIL'} ({evaluation['metric']} {sense} {evaluation['bound']:g}); "
          f"report: {report['out']}.report.json")
    return 0 if report["ok"] else 1
