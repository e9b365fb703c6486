"""Byte-level tokenizer: token id == byte value (0..255), as the SMT reference uses for text and 8-bit pixels.

No special tokens are added to sequences. Byte 0 (NUL, never in text) doubles as the padding token and
padding is on the left, so batched prompts end where generation starts.
"""

from __future__ import annotations

from transformers.tokenization_python import AddedToken, PreTrainedTokenizer


class SMTByteTokenizer(PreTrainedTokenizer):
    """UTF-8 bytes as tokens: `encode("hi") == [104, 105]`; vocab_size 256.

    Added tokens (`add_tokens`, `add_special_tokens`, e.g. an EOS "<|eos|>") take ids 256, 257, ...: `len(tokenizer)`
    and `get_vocab()` count them (resize the model with `model.resize_token_embeddings(len(tokenizer))`), and
    `decode` writes them out as their text (unless `skip_special_tokens=True` and they are special), as
    transformers' `ByT5Tokenizer` does. A one-character ASCII token (e.g. "\n" as EOS) is that byte's id; one
    character in U+0080-U+00FF raises ValueError (it would name byte ord(c), while text holds it as two UTF-8
    bytes: "é" is [195, 169]).
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, pad_token="\x00", padding_side="left", **kwargs):
        pad = AddedToken(pad_token, special=True, normalized=False) if isinstance(pad_token, str) else pad_token
        self._added_tokens_decoder = {0: pad}
        super().__init__(pad_token=pad, padding_side=padding_side, **kwargs)

    @property
    def vocab_size(self) -> int:
        return 256

    def _add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        for token in new_tokens:
            text = str(token)
            if len(text) == 1 and 128 <= ord(text) < 256:
                raise ValueError(
                    f"SMTByteTokenizer cannot add the one-character token {text!r}: its tokens are UTF-8 bytes, and "
                    f"{text!r} would name byte {ord(text)}, while text holds it as the bytes "
                    f"{list(text.encode('utf-8'))}. Add a token of several characters (e.g. '<{ord(text):02x}>').")
        return super()._add_tokens(new_tokens, special_tokens=special_tokens)

    def get_vocab(self) -> dict[str, int]:
        """The 256 bytes (as one-character strings) and the added tokens, with their ids."""
        vocab = {chr(i): i for i in range(256)}
        vocab.update({tok: i for tok, i in self.added_tokens_encoder.items() if i >= 256})  # (a pad names a byte)
        return vocab

    def _tokenize(self, text: str) -> list[str]:
        return [chr(b) for b in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int:
        return ord(token) if len(token) == 1 and ord(token) < 256 else 0

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Bytes back to text (invalid UTF-8 replaced); an added token is written as its own text."""
        added = self.added_tokens_encoder

        def raw(token: str) -> bytes:
            if len(token) == 1 and ord(token) < 256:
                return bytes([ord(token)])
            return token.encode("utf-8") if token in added else b""

        return b"".join(map(raw, tokens)).decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is the 256 byte values


__all__ = ["SMTByteTokenizer"]
