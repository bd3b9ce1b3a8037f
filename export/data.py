"""Texts an export calibrates on and is checked on, and batches of the model's inputs made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kzoo.export.common import ExportError, input_names, with_choices

# Built-in texts. Calibration and evaluation never share a sentence: the report's numbers are
# measured on text the quantizer did not see.
CALIBRATION_TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Machine translation has improved a lot over the last ten years.",
    "Le chat dort sur le canapé pendant que la pluie tombe dehors.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "El perro corre por el parque todas las mañanas con su dueño.",
    "Il treno per Milano parte alle otto e trenta dal binario tre.",
    "O mercado abre cedo e fecha antes do pôr do sol.",
    "Москва — столица России и крупнейший город страны.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "東京は日本の首都で、世界有数の大都市です。",
    "서울은 대한민국의 수도이며 가장 큰 도시이다.",
    "दिल्ली भारत की राजधानी है।",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "Istanbul, Türkiye'nin en kalabalık şehridir.",
    "Warszawa jest stolicą Polski i największym miastem kraju.",
    "Amsterdam is de hoofdstad van Nederland.",
    "Stockholm är Sveriges huvudstad och största stad.",
    "Hà Nội là thủ đô của Việt Nam.",
    "Prices rose by 3.5% in 2023, to 1,250 euros per month.",
    "Send an e-mail to info@example.com before 10:30 a.m. on Monday!",
    "She said: \"I'll be there at 7 o'clock, don't worry.\"",
    "1 2 3 4 5 6 7 8 9 10, and then we start again.",
]
EVALUATION_TEXTS = [
    "Hello, my dog is cute and my cat is even cuter.",
    "Paris is the capital of France and its largest city.",
    "La tour Eiffel a été construite pour l'Exposition universelle de 1889.",
    "Das Wetter in Berlin ist heute sonnig und warm.",
    "¿Dónde está la biblioteca más cercana, por favor?",
    "Санкт-Петербург основан Петром Первым в 1703 году.",
    "Το φεγγάρι φωτίζει τη θάλασσα τη νύχτα.",
    "مرحبا بكم في المكتبة الوطنية.",
    "我们明天早上九点在火车站见面。",
    "このレストランの寿司はとても美味しいです。",
    "오늘 날씨가 정말 좋네요.",
    "यह किताब बहुत दिलचस्प है।",
    "The meeting was moved from Tuesday to Thursday at 3 p.m.",
    "A short one.",
    "Numbers like 42, 3.14159 and 1,000,000 appear in text too.",
    "Emoji 😀 and symbols © ™ € also show up in real input.",
]


def read_texts(path):
    """Non-empty lines of a UTF-8 text file (a calibration file)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such calibration file (one text per line)")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise ExportError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise ExportError(f"{path}: no text in it (one text per line)")
    return lines


def with_masks(texts, mask_token, every=4, seed=0):
    """Texts with a word replaced by the mask token here and there (fill-mask sees what it serves)."""
    if not mask_token:
        return list(texts)
    rng = np.random.default_rng(seed)
    out = []
    for i, text in enumerate(texts):
        words = text.split(" ")
        if i % every == 0 and len(words) > 2:
            words[int(rng.integers(len(words)))] = mask_token
        out.append(" ".join(words))
    return out


def full_batches(items, batch_size):
    """`items` in batches of exactly `batch_size`, the last one topped up from the start
    (TFLite's calibrator cannot change a dynamic-shape model's batch size between samples)."""
    items = list(items)
    count = -(-len(items) // batch_size)
    cycled = (items * (batch_size // max(len(items), 1) + 2))[:count * batch_size]
    return [cycled[i:i + batch_size] for i in range(0, len(cycled), batch_size)]


def id_batches(model, tokenizer, texts, *, batch_size, length, seed):
    """Padded int32 batches of the model's inputs, [batch_size, length] each.

    From `texts` through the tokenizer when there is one; random ids (rows of varied length) when
    the model dir has no tokenizer. Every batch has padding in it, so the attention mask's range is
    part of what a quantizer calibrates. All batches share one shape: TFLite's calibrator cannot
    resize a model with dynamic shapes between samples. A multiple-choice model's: [batch_size / 2, 2,
    length] (two texts as the choices of one example).
    """
    names = input_names(model)
    batches = []
    if tokenizer is not None:
        for chunk in full_batches(texts, batch_size):
            batch = tokenizer(chunk, max_length=length, truncation=True, padding="max_length")
            batch = {k: np.asarray(v, "int32")[:, :length] for k, v in batch.items() if k in names}
            for name in names:
                batch.setdefault(name, np.zeros_like(batch["token_ids"]))
            batches.append(with_choices(batch, model))
        return with_languages(batches, model, seed)
    rng = np.random.default_rng(seed)
    vocab = int(getattr(getattr(model, "backbone", model), "vocabulary_size"))
    for _ in range(max(1, len(texts) // batch_size)):
        ids = rng.integers(5, vocab, size=(batch_size, length)).astype("int32")
        mask = np.ones_like(ids)
        for row in range(batch_size):
            mask[row, int(rng.integers(2, length + 1)):] = 0
        batch = {name: np.zeros_like(ids) for name in names}
        batch.update(token_ids=ids, padding_mask=mask)
        batches.append(with_choices(batch, model))
    return with_languages(batches, model, seed)


def with_languages(batches, model, seed):
    """Every other batch with a language per row where the model has a language table (`lang_ids` in
    its input ranges). Its tokenizer says "no language" (-1: how Transformers' pipelines call XLM) and
    callers of the ids signature give one: calibrated on -1 alone, the language embedding's product
    with its mask is 0 throughout, an empty range (scale 0: LiteRT aborts on the int16x8 model)."""
    backbone = getattr(model, "backbone", model)
    languages = type(backbone).input_ranges(backbone.get_config()).get("lang_ids")
    if languages is None:
        return batches
    rng = np.random.default_rng(seed)
    out = []
    for i, batch in enumerate(batches):
        if i % 2:
            shape = batch["lang_ids"].shape
            row = rng.integers(0, languages[1], size=shape[:-1] + (1,))
            batch = {**batch, "lang_ids": np.broadcast_to(row, shape).astype("int32")}
        out.append(batch)
    return out


def text_inputs(names, texts):
    """The text signature's inputs for evaluation or calibration texts: {"text": texts}, or for a pair
    ("question", "context"): each text's first words as a question about the text after it."""
    if len(names) == 1:
        return {names[0]: list(texts)}
    contexts = list(texts[1:]) + list(texts[:1])
    return {names[0]: [" ".join(t.split()[:6]) + "?" for t in texts], names[1]: contexts}
