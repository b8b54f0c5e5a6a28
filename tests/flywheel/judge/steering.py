"""A tiny model steered into a judge: a forward hook makes the demo model's next token the
verdict a test wants for the prompt it is given (the prompts the rubric builds)."""

from flywheel.demo_corpus import kindness
from flywheel.model_loading import LoadedModel


def kind_verdict(text: str) -> str:
    """What a judge that likes kind words says to the rubric's messages (as the demo's
    lower-casing tokenizer decodes them)."""
    if "[ answer a ]" in text:
        first = text.split("[ answer a ]")[1].split("[ answer b ]")[0]
        second = text.split("[ answer b ]")[1].split("which answer")[0]
        a, b = kindness(first), kindness(second)
        return "a" if a > b else "b" if b > a else "tie"
    return "good" if kindness(text.split("[ answer ]")[-1]) > 0 else "bad"


class Steering:
    """A forward hook on the model: on a prompt's forward pass, the verdict `decide` gives
    for the decoded prompt becomes the next token; on later passes, the end of the answer."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.tokenizer = loaded.tokenizer
        self.decide = kind_verdict
        loaded.model.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        ids = kwargs["input_ids"]
        for row in range(ids.shape[0]):
            if ids.shape[1] > 1:
                text = self.tokenizer.decode(ids[row], skip_special_tokens=True)
                token = self.tokenizer.convert_tokens_to_ids(self.decide(text))
            else:
                token = self.tokenizer.eos_token_id
            output.logits[row, -1, token] += 1e4
        return output
