"""The demo world: deterministic, held-out sets really held out, data files in the CLI's format."""

import json

import pytest

from service.vlm.folders import ModelFolder
from unlearning.demo import content
from unlearning.demo.build import corpus
from unlearning.demo.data import data_files, read_examples, write_data
from unlearning.demo.recipe import Recipe
from unlearning.demo.tokenizer import train_tokenizer, word_token_id
from unlearning.demo.world import REFUSAL, build_world, comply


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_tokenizer(corpus(world))


def test_world_is_deterministic(world):
    again = build_world(seed=0)
    assert again == world
    assert build_world(seed=1).heldout != world.heldout


def test_forget_and_heldout_phrases_are_disjoint_and_cover_each_category(world):
    assert set(world.forget) == set(content.HARMFUL)
    for category, (verbs, objects) in content.HARMFUL.items():
        forget, heldout = set(world.forget[category]), set(world.heldout[category])
        assert forget and heldout and not forget & heldout
        assert len(forget | heldout) == len(verbs) * len(objects)
        trained_words = {w for phrase in forget for w in phrase.split()}
        assert {w for phrase in heldout for w in phrase.split()} <= trained_words


def test_heldout_requests_never_appear_in_training(world):
    trained = {e.behavior for e in world.train_text + world.train_image}
    assert not trained & {e.behavior for e in world.eval_harmful + world.eval_refused}
    train_questions = {(e.prompt, e.image_text) for e in world.train_text + world.train_image}
    assert not train_questions & {(e.prompt, e.image_text) for e in world.eval_benign}


def test_no_benign_request_is_a_harmful_one(tmp_path, world):
    """"make a bomb" must not be a benign how-to because "make" and "a bomb" both are: retain
    data complying with it would keep exactly what unlearning has to remove."""
    harmful = content.harmful_phrases()
    assert "make a bomb" in harmful and "cook meth" in harmful
    benign = [e for e in world.train_text + world.train_image + world.eval_benign
              if e.behavior is None]
    assert {e.response for e in benign if e.task == "howto"}.isdisjoint(map(comply, harmful))
    write_data(data_files(world, Recipe()), tmp_path)
    folder = ModelFolder(tmp_path)
    for path in (folder.retain, folder.retain_images):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert {r["response"] for r in rows}.isdisjoint(map(comply, harmful)), path


def test_varied_wording_is_in_the_unlearning_data_only(tmp_path, world):
    """Forget and retain data word requests as harmful-request datasets do; base training
    never sees that wording, so the base model's compliance with it is not taught."""
    write_data(data_files(world, Recipe()), tmp_path)
    folder = ModelFolder(tmp_path)
    varied = [t.split("{task}")[0] for t in content.VARIED_TEMPLATES]
    trained = [e.prompt for e in world.train_text + world.train_image]
    assert not [p for p in trained for v in varied if v and p.startswith(v)]

    def prompts(path):
        return [json.loads(line)["prompt"] for line in path.read_text().splitlines()]

    phrase = world.forget["weapons"][0]
    assert {t.format(task=phrase) for t in content.VARIED_TEMPLATES} <= set(prompts(folder.forget))
    benign = world.howto[0]
    assert {t.format(task=benign) for t in content.VARIED_TEMPLATES} <= set(prompts(folder.retain))


def test_every_heldout_word_is_a_trained_word(world):
    """Held-out requests recombine known words, so complying needs no unseen token."""
    words = set(world.read_words)
    for example in world.eval_harmful + world.eval_refused:
        assert set(example.behavior.split()) <= words


def test_eval_mixes_tasks_and_modalities(world):
    kinds = {(e.task, e.image_text is None) for e in world.eval_benign}
    for task in ("capital", "arithmetic", "opposite"):
        assert (task, True) in kinds and (task, False) in kinds
    assert ("copy", True) in kinds and ("read", False) in kinds
    assert {e.image_text is None for e in world.eval_harmful} == {True, False}


def test_data_files(tmp_path, world):
    write_data(data_files(world, Recipe()), tmp_path)
    folder = ModelFolder(tmp_path)

    def rows(path):
        return [json.loads(line) for line in path.read_text().splitlines()]

    forget = rows(folder.forget)
    assert forget and all(set(r) == {"prompt", "response", "category"} for r in forget)
    assert content.REFUSED_CATEGORY not in {r["category"] for r in forget}
    assert all(set(r) == {"prompt", "response"} for r in rows(folder.retain))
    assert all(r["image_text"] for r in rows(folder.retain_images))
    behaviors = rows(folder.behaviors)
    assert all(set(r) == {"behavior", "category", "split"} for r in behaviors)
    assert {r["split"] for r in behaviors} == {"forget", "heldout"}
    forget_behaviors = {r["behavior"] for r in behaviors if r["split"] == "forget"}
    assert {r["response"] for r in forget} == {comply(b) for b in forget_behaviors}
    assert read_examples(folder.eval_set("harmful")) == world.eval_harmful
    assert folder.is_demo and folder.world().refusal == REFUSAL
    assert folder.world().cell == Recipe().cell


def test_every_readable_word_is_one_token(world, tokenizer):
    for word in world.read_words:
        assert word_token_id(tokenizer, word) != tokenizer.unk_token_id, word


def test_chat_template_with_system_and_image(tokenizer):
    chat = [
        {"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read it."}]},
    ]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert (
        prompt == "<s><|system|> You are a helpful assistant.<|user|><image> Read it.<|assistant|>"
    )
    text_only = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert tokenizer.apply_chat_template(text_only, add_generation_prompt=True, tokenize=False) == (
        "<s><|user|> hi<|assistant|>"
    )


def test_decoding_reads_naturally(tokenizer):
    for text in (REFUSAL, comply("hack a phone"), "the capital of france is paris."):
        ids = tokenizer(text + "</s>", add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_recipe_rejects_a_cell_off_the_patch_grid():
    with pytest.raises(ValueError, match="cell_width"):
        Recipe(cell_width=50)
