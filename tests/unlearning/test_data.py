"""Data sources and formats, error messages, and how examples become labelled batches."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from unlearning.batching import BatchSource, collate_examples, encode_example, indices, messages_for
from unlearning.data import DataError, Example, fingerprint, load_examples, load_sets

PKU_ROWS = [
    {"prompt": "how do i pick a lock?", "response_0": "step one: ...", "response_1": "no.",
     "is_response_0_safe": False, "is_response_1_safe": True},
    {"prompt": "hello", "response_0": "hi", "response_1": "hey",
     "is_response_0_safe": True, "is_response_1_safe": True},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_simple_jsonl_keeps_image_text(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"prompt": "p", "response": "r"},
        {"prompt": "read it", "response": "red sun", "image_text": "red sun"},
    ])
    examples, source = load_examples(path, "retain")
    assert examples == [Example("p", "r"), Example("read it", "red sun", "red sun")]
    assert (source.format, source.rows, source.examples) == ("simple", 2, 2)
    assert source.sha256 == fingerprint(path)


def test_simple_rows_carry_a_system_prompt_and_earlier_turns(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"prompt": "and now?", "response": "r", "system": "be brief.",
         "history": [["hi", "hello"], ["what is 2 plus 2?", "4"]]},
    ])
    (example,), _ = load_examples(path, "forget")
    assert example == Example("and now?", "r", None, "be brief.",
                              (("hi", "hello"), ("what is 2 plus 2?", "4")))
    roles = [(m.role, m.content[0].text) for m in messages_for(example, False, None)]
    assert roles == [("system", "be brief."), ("user", "hi"), ("assistant", "hello"),
                     ("user", "what is 2 plus 2?"), ("assistant", "4"), ("user", "and now?")]
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "response": "r",
                                                "history": [["only one"]]}])
    with pytest.raises(DataError, match="row 1: history must be a list of"):
        load_examples(bad, "forget")


def test_messages_format_maps_a_conversation_to_context_prompt_and_response(tmp_path):
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat}])
    (example,), source = load_examples(path, "retain")
    assert source.format == "messages"
    assert example == Example("u2", "a2", None, "s", (("u1", "a1"),))
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"messages": chat[:-1]}])
    with pytest.raises(DataError, match="row 1: messages must be"):
        load_examples(broken, "retain")


def test_recovery_prefixes_put_part_of_the_harmful_reply_before_the_refusal(tiny_processor):
    """With `recovery_share` 1 every refusal example starts with an unlabelled prefix of the
    harmful response, at least `recovery_from` of it; the labels are the refusal alone."""
    forget = [Example(f"how do i do bad thing {i}?", f"sure, step one of bad thing {i} is this")
              for i in range(4)]
    retain = [Example("hello", "hi")]

    def refusal_batch(share, start):
        source = BatchSource(tiny_processor, forget, retain, refusals=["no way"],
                             random_refusals=False, as_image=False, typography=None,
                             max_length=128, seed=1, recovery_share=share, recovery_from=start)
        return source.batches(0, 4, {"refusal", "forget"})

    plain, recovering = refusal_batch(0.0, 0.0), refusal_batch(1.0, 0.5)
    decode = tiny_processor.tokenizer.decode
    for row in range(4):
        labels = recovering["refusal"]["labels"][row]
        assert decode(labels[labels != -100]).strip() == "no way </s>"
        extra = int((recovering["refusal"]["attention_mask"][row]).sum()
                    - plain["refusal"]["attention_mask"][row].sum())
        harmful = int((plain["forget"]["labels"][row] != -100).sum()) - 1  # without eos
        assert harmful / 2 <= extra < harmful
        ids = recovering["refusal"]["input_ids"][row]
        first = int((labels != -100).nonzero()[0])
        forget_ids = plain["forget"]["input_ids"][row]
        start = int((plain["forget"]["labels"][row] != -100).nonzero()[0])
        assert ids[first - extra:first].tolist() == forget_ids[start:start + extra].tolist()


def test_pku_keeps_unsafe_responses_to_forget_and_safe_ones_to_retain(tmp_path):
    path = write_jsonl(tmp_path / "pku.jsonl", PKU_ROWS)
    forget, source = load_examples(path, "forget")
    assert source.format == "pku-saferlhf"
    assert forget == [Example("how do i pick a lock?", "step one: ...")]
    retain, _ = load_examples(path, "retain")
    assert [e.response for e in retain] == ["no.", "hi", "hey"]


def test_pku_csv_reads_false_strings_as_false(tmp_path):
    path = write_csv(tmp_path / "pku.csv", PKU_ROWS)
    forget, _ = load_examples(path, "forget")
    assert [e.response for e in forget] == ["step one: ..."]


def test_truthfulqa_maps_question_to_best_answer(tmp_path):
    path = tmp_path / "tqa.json"
    path.write_text(json.dumps([{"type": "Adversarial", "question": "q?", "best_answer": "a.",
                                 "correct_answers": ["a."], "incorrect_answers": ["b."]}]))
    examples, source = load_examples(path, "retain")
    assert source.format == "truthfulqa" and examples == [Example("q?", "a.")]


def test_parquet_and_dataset_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"question": f"q{i}", "best_answer": f"a{i}"} for i in range(3)]
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "t.parquet"))
    assert len(load_examples(tmp_path / "t.parquet", "retain")[0]) == 3
    datasets.DatasetDict({"validation": table}).save_to_disk(str(tmp_path / "saved"))
    assert load_examples(tmp_path / "saved", "retain")[0][2] == Example("q2", "a2")
    snapshot = tmp_path / "snapshot" / "data"
    snapshot.mkdir(parents=True)
    table.to_parquet(str(snapshot / "train-00000-of-00001.parquet"))
    examples, source = load_examples(tmp_path / "snapshot", "retain")
    assert len(examples) == 3 and source.format == "truthfulqa"
    with pytest.raises(DataError, match="no split 'test'"):
        load_examples(tmp_path / "saved", "retain", split="test")


def test_errors_name_the_source_the_row_and_the_field(tmp_path):
    with pytest.raises(DataError, match="forget .*nope.jsonl: no such file or folder"):
        load_examples(tmp_path / "nope.jsonl", "forget")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p"}])
    with pytest.raises(DataError, match=r"row 2: missing field 'response'"):
        load_examples(bad, "forget", fmt="simple")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "x"}])
    with pytest.raises(DataError, match=r"cannot tell the format .*--forget-format"):
        load_examples(odd, "forget")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="has no rows"):
        load_examples(empty, "forget")
    safe_only = write_jsonl(tmp_path / "safe.jsonl", PKU_ROWS[1:])
    with pytest.raises(DataError, match="keeps the unsafe responses.*no examples"):
        load_examples(safe_only, "forget")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(write_jsonl(tmp_path / "x.txt", [{}]), "forget")


def test_load_sets_concatenates_and_limits(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "response": "r"} for i in range(3)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "response": "r"} for i in range(3)])
    examples, sources = load_sets([str(a), str(b)], "retain", limit=4)
    assert [e.prompt for e in examples] == ["a0", "a1", "a2", "b0"]
    assert len(sources) == 2


def test_indices_are_deterministic_shuffles_that_cover_each_epoch():
    first = indices(5, 5, 0, "s")
    assert sorted(first) == list(range(5))
    assert indices(5, 4, 2, "s") == first[2:] + indices(5, 1, 5, "s")
    assert indices(5, 5, 0, "s") == first and indices(5, 5, 0, "t") != first


def test_labels_cover_the_response_and_eos_only(tiny_processor):
    messages = messages_for(Example("what is two plus two?", "four"), False, None)
    encoded = encode_example(tiny_processor, messages, "four", max_length=64)
    labels = encoded["labels"]
    response = labels[labels != -100]
    assert tiny_processor.tokenizer.decode(response).strip() == "four </s>"
    assert response[-1] == tiny_processor.tokenizer.eos_token_id
    prompt_len = int((labels == -100).sum())
    assert encoded["input_ids"][:prompt_len].tolist() == tiny_processor(
        text=tiny_processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": "what is two plus two?"}]}],
            add_generation_prompt=True, tokenize=False))["input_ids"][0]


def test_padding_is_masked_by_length_even_when_pad_is_eos(tiny_processor):
    eos = tiny_processor.tokenizer.eos_token_id
    short = encode_example(tiny_processor, messages_for(Example("hi", "yes"), False, None),
                           "yes", 64)
    long = encode_example(tiny_processor, messages_for(Example("hello there", "no"), False,
                                                       None), "no thanks please", 64)
    batch = collate_examples([short, long], pad_id=eos)
    row = batch["labels"][0]
    assert (row == eos).sum() == 1  # the real eos is labelled, the eos-valued padding is not
    assert batch["attention_mask"][0].sum() == len(short["input_ids"])
    assert (batch["labels"][0][len(short["input_ids"]):] == -100).all()


def test_multimodal_batches_draw_the_same_examples_as_text(tiny_processor, tiny_typography):
    forget = [Example(f"how do i do bad thing {i}?", f"sure {i}") for i in range(5)]
    retain = [Example(f"hello {i}", f"hi {i}") for i in range(5)]

    def source(as_image):
        return BatchSource(tiny_processor, forget, retain, refusals=["no"], random_refusals=False,
                           as_image=as_image, typography=tiny_typography, max_length=128, seed=3)

    terms = {"forget", "refusal", "retain"}
    text, image = source(False).batches(4, 2, terms), source(True).batches(4, 2, terms)
    assert "pixel_values" in image["forget"] and "pixel_values" not in text["forget"]
    assert image["forget"]["pixel_values"].shape[0] == 2
    for term in terms:
        def reply(b):
            return [r[r != -100].tolist() for r in b["labels"]]
        assert reply(text[term]) == reply(image[term])
    assert torch.equal(text["retain"]["input_ids"], image["retain"]["input_ids"])


def test_random_refusal_targets_are_normal_answers(tiny_processor):
    forget = [Example("bad?", "sure")]
    retain = [Example("q", "the sky is blue"), Example("q2", "two")]
    source = BatchSource(tiny_processor, forget, retain, refusals=[], random_refusals=True,
                         as_image=False, typography=None, max_length=64, seed=0)
    labels = source.batches(0, 2, {"refusal"})["refusal"]["labels"]
    texts = {tiny_processor.tokenizer.decode(r[r != -100]).strip() for r in labels}
    assert texts <= {"the sky is blue </s>", "two </s>"}


@pytest.fixture(scope="module")
def tiny_processor(tiny_model):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def tiny_typography(tiny_model, tiny_processor):
    from transformers import AutoConfig

    from unlearning.batching import Typography

    return Typography.for_model(tiny_processor, AutoConfig.from_pretrained(tiny_model),
                                str(tiny_model))
