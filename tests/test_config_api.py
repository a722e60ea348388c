"""Config keys of the API layer: apiKeys, maxRequestSize, filters, upstreamHeaders, peers."""

from __future__ import annotations

import pytest

from llamaswap.config import ConfigError, parse_config

MODEL = "models:\n  m:\n    cmd: server --port ${PORT}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml")
    return e.value.problems


def test_api_keys_validated_without_echoing_them() -> None:
    assert parse_config("apiKeys: [a, b, a]\n" + MODEL).api_keys == ("a", "b")
    found = problems('apiKeys: ["", "has space", ok]\n' + MODEL)
    assert found == ["c.yaml: apiKeys[0]: empty api key found in apiKeys",
                     "c.yaml: apiKeys[1]: api key cannot contain spaces"]
    assert not any("has space" in line for line in found)


def test_api_keys_are_no_longer_reported_as_unsupported() -> None:
    config = parse_config("apiKeys: [k]\npeers: {}\n" + MODEL)
    assert not any("not supported" in w for w in config.warnings)


@pytest.mark.parametrize(("value", "size"), [
    ("1048576", 1048576), ("'100MB'", 100_000_000), ("1.5GiB", int(1.5 * 1024 ** 3)),
    ("512k", 512_000)])
def test_max_request_size_units(value: str, size: int) -> None:
    assert parse_config(f"maxRequestSize: {value}\n" + MODEL).max_request_size == size


def test_max_request_size_default_and_errors() -> None:
    assert parse_config(MODEL).max_request_size == 100 * 1024 * 1024
    assert problems("maxRequestSize: lots\n" + MODEL) == [
        "c.yaml: maxRequestSize: must be a positive size like 104857600, '100MB' or '1GiB', "
        "got 'lots'"]


def test_filters_and_set_params_by_id_aliases() -> None:
    config = parse_config(MODEL + """    aliases: [mm]
    filters:
      strip_params: "temperature,model"
      setParams: {top_k: 3}
      setParamsByID:
        "${MODEL_ID}": {a: 1}
        mm: {b: 2}
        "${MODEL_ID}:think": {think: true}
""")
    model = config.models["m"]
    assert model.filters.strip_params == ("temperature",)
    assert model.aliases == ("mm", "m:think")
    assert config.resolve("m:think") == "m"


def test_set_params_by_id_conflicts_use_llama_swaps_messages() -> None:
    text = MODEL + """    filters:
      setParamsByID:
        other: {a: 1}
        taken: {a: 1}
  other:
    cmd: x --port ${PORT}
  third:
    cmd: y --port ${PORT}
    aliases: [taken]
"""
    assert problems(text) == [
        "c.yaml: models.m.filters.setParamsByID.other: model m filters.setParamsByID: "
        "key 'other' conflicts with an existing model ID",
        "c.yaml: models.m.filters.setParamsByID.taken: duplicate alias 'taken' in model m "
        "filters.setParamsByID, already used by model third"]


def test_upstream_headers() -> None:
    config = parse_config(MODEL + "    upstreamHeaders: {Authorization: Bearer ${env.K}}\n",
                          environ={"K": "v"})
    assert config.models["m"].upstream_headers == (("Authorization", "Bearer v"),)
    assert problems(MODEL + "    upstreamHeaders: {'bad name': x}\n") == [
        "c.yaml: models.m.upstreamHeaders.bad name: invalid HTTP header name 'bad name'"]


def test_peers_and_their_problems() -> None:
    config = parse_config(MODEL + """peers:
  cloud:
    proxy: https://api.example/v1
    apiKey: k
    models: [gpt, m]
    timeouts: {connect: 5, responseHeader: 9}
""")
    peer = config.peers["cloud"]
    assert (peer.models, peer.connect_timeout, peer.response_header_timeout) == (
        ("gpt", "m"), 5.0, 9.0)
    assert config.resolve_peer("cloud/m") == ("cloud", "m")
    assert config.resolve_peer("gpt") == ("cloud", "gpt")
    found = problems(MODEL + """    aliases: [p/x]
peers:
  p:
    proxy: ftp://x
    models: [x]
  q:
    models: []
  r:
    proxy: http://r
    caCert: /nonexistent/ca.pem
    models: [y]
""")
    assert found == [
        "c.yaml: peers.p.proxy: invalid peer proxy URL (invalid proxy URL 'ftp://x': the "
        "scheme must be http or https)",
        'c.yaml: peers.p.models[0]: peer model "p/x" conflicts with a model ID or alias',
        "c.yaml: peers.q.proxy: proxy is required",
        "c.yaml: peers.q.models: peer models can not be empty",
        "c.yaml: peers.r.caCert: cannot read the CA certificate file '/nonexistent/ca.pem'"]


def test_ambiguous_bare_peer_name_needs_the_fqn() -> None:
    config = parse_config(MODEL + """peers:
  a: {proxy: "http://a", models: [shared]}
  b: {proxy: "http://b", models: [shared]}
""")
    assert config.resolve_peer("shared") is None
    assert config.resolve_peer("b/shared") == ("b", "shared")
