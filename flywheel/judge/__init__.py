"""AI feedback (RLAIF): a judge that votes like an annotator.

A judge is a function (`flywheel.judge.functions`), a chat model behind any
OpenAI-compatible endpoint (`flywheel.judge.chat`) or a local Hugging Face model read by
the log-probabilities of its verdicts (`flywheel.judge.local`). Each judges every pair in
both orders (`flywheel.judge.verdicts`), by a rubric (`flywheel.judge.rubric`), and votes
through the server's routes as a user with role `judge` (`flywheel.judge.runner`); its
votes are then measured and weighted like anyone's (`feedback.queries.annotators`).
"""

from pathlib import Path

from flywheel.errors import FlywheelError


def build_judge(*, function: str | None = None, url: str | None = None,
                model: str | None = None, api_key: str | None = None,
                rubric: Path | None = None, models_dir: Path):
    """The judge the options name: `function` (module:function); else `url` and `model`
    (an OpenAI-compatible chat endpoint); else `model` alone (a local Hugging Face
    model, found like `--model`: in `models_dir`, or by hub id). Raises FlywheelError when
    they name none, or more than one."""
    if function is not None:
        if url is not None or model is not None:
            raise FlywheelError("give a judge function, or a judge model, not both")
        from flywheel.judge.functions import FunctionJudge

        return FunctionJudge(function)
    if model is None:
        raise FlywheelError("no judge: give --judge module:function, --judge-url with "
                            "--judge-model, or --judge-model alone for a local model")
    from flywheel.judge.rubric import load_rubric

    if url is not None:
        from flywheel.judge.chat import ChatJudge

        return ChatJudge(url, model, rubric=load_rubric(rubric), api_key=api_key)
    from flywheel.judge.local import LogprobJudge
    from flywheel.model_loading import load_model

    loaded = load_model(model, models_dir=models_dir)
    return LogprobJudge(loaded.model, loaded.tokenizer, rubric=load_rubric(rubric),
                        name=model)
