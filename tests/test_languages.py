"""Definition-aware chunking beyond the first eight languages: per language a small real file,
its chunk boundaries and symbols, and the model's input limit; detection, aliases, queries."""

from __future__ import annotations

from importlib import resources

import pytest
from test_chunking import assert_well_formed

import coarch
from coarch.chunking import Chunk, Chunker
from coarch.languages import (
    canonical_language,
    definition_patterns,
    grammar_languages,
    language_for,
    script_language,
    split_patterns,
    ts_language,
)

# language -> (path, source, {symbol: first line of its first chunk}).
SAMPLES: dict[str, tuple[str, str, dict[str, int]]] = {
    "kotlin": (
        "Client.kt",
        """\
package demo

/** Talks HTTP. */
@Suppress("unused")
class HttpClient(val base: String) {
    fun send(path: String): String {
        return base + path
    }
}

object Registry {
    fun lookup(name: String) = name
}

fun retryUpload(times: Int): Boolean {
    return times > 0
}
""",
        {"HttpClient": 3, "HttpClient.send": 6, "Registry": 11, "retryUpload": 15},
    ),
    "csharp": (
        "Client.cs",
        """\
using System;

namespace Demo
{
    /// <summary>Talks HTTP.</summary>
    [Serializable]
    public class HttpClient
    {
        public HttpClient() { }

        public string Send(string path)
        {
            return path;
        }

        public int Timeout { get; set; }
    }

    public interface IStore
    {
        void Save();
    }
}
""",
        {
            "Demo.HttpClient": 5,
            "Demo.HttpClient.HttpClient": 9,
            "Demo.HttpClient.Send": 11,
            "Demo.HttpClient.Timeout": 16,
            "Demo.IStore": 19,
        },
    ),
    "ruby": (
        "client.rb",
        """\
require "net/http"

# Talks HTTP.
module Net
  class HttpClient
    def send_request(path)
      path
    end

    def self.build
      new
    end
  end
end

def retry_upload(times)
  times > 0
end
""",
        {"Net": 3, "retry_upload": 16},
    ),
    "php": (
        "Client.php",
        """\
<?php
namespace Demo;

/** Talks HTTP. */
class HttpClient
{
    public function send(string $path): string
    {
        return $path;
    }
}

interface Store
{
    public function save(): void;
}

function retry_upload(int $times): bool
{
    return $times > 0;
}
""",
        {"HttpClient": 4, "HttpClient.send": 7, "Store": 13, "retry_upload": 18},
    ),
    "swift": (
        "Client.swift",
        """\
import Foundation

/// Talks HTTP.
class HttpClient {
    func send(path: String) -> String {
        return path
    }
}

protocol Store {
    func save()
}

struct Point {
    var x: Int
}

func retryUpload(times: Int) -> Bool {
    return times > 0
}
""",
        {"HttpClient": 3, "Store": 10, "Point": 14, "retryUpload": 18},
    ),
    "scala": (
        "Client.scala",
        """\
package demo

/** Talks HTTP. */
class HttpClient(base: String) {
  def send(path: String): String = {
    base + path
  }
}

object Registry {
  def lookup(name: String): String = name
}

trait Store {
  def save(): Unit
}
""",
        {"HttpClient": 3, "HttpClient.send": 5, "Registry": 10, "Store": 14},
    ),
    "lua": (
        "client.lua",
        """\
local M = {}

-- Sends a request.
function M.send(path)
  return path
end

function M:close()
  self.open = false
end

local function retry_upload(times)
  return times > 0
end

return M
""",
        {"M.send": 3, "M:close": 8, "retry_upload": 12},
    ),
    "shell": (
        "deploy.sh",
        """\
#!/bin/bash
set -e

# Builds the project.
build() {
  make all
}

function deploy {
  rsync -a dist/ host:/srv
}

build
deploy
""",
        {"build": 4, "deploy": 9},
    ),
    "sql": (
        "schema.sql",
        """\
-- Users of the service.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE INDEX users_name ON users (name);

CREATE VIEW active_users AS
SELECT id, name FROM users WHERE name IS NOT NULL;

CREATE FUNCTION add_one(x integer) RETURNS integer AS $$
    SELECT x + 1;
$$ LANGUAGE sql;
""",
        {"users": 1, "users_name": 7, "active_users": 9, "add_one": 12},
    ),
    "markdown": (
        "README.md",
        """\
# coarch

Local code search.

## Install

Run the setup script.

## Usage

Index, then search.

### Searching

Words or identifiers.
""",
        {"coarch": 1, "coarch.Install": 5, "coarch.Usage": 9},
    ),
    "yaml": (
        "ci.yml",
        """\
name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: make test
  lint:
    runs-on: ubuntu-latest
""",
        {"name": 1, "on": 2, "jobs": 5, "jobs.build": 6, "jobs.lint": 10},
    ),
    "toml": (
        "pyproject.toml",
        """\
title = "demo"

[project]
name = "coarch"
version = "1.0"

[tool.ruff]
line-length = 100

[[bin]]
name = "cli"
""",
        {"title": 1, "project": 3, "tool.ruff": 7, "bin": 10},
    ),
    "json": (
        "package.json",
        """\
{
  "name": "demo",
  "version": "1.0.0",
  "scripts": {
    "build": "tsc",
    "test": "jest"
  },
  "dependencies": {
    "react": "^18.0.0"
  }
}
""",
        {"name": 1, "version": 3, "scripts": 4, "dependencies": 8},
    ),
    "vue": (
        "Counter.vue",
        """\
<template>
  <button @click="increment">{{ count }}</button>
</template>

<script lang="ts">
export function increment(n: number): number {
  return n + 1;
}

export class Counter {
  count = 0;
}
</script>

<style scoped>
button { color: red; }
</style>
""",
        {"template": 1, "script": 5, "script.increment": 6, "script.Counter": 10, "style": 15},
    ),
    "svelte": (
        "Counter.svelte",
        """\
<script>
  let count = 0;

  function increment() {
    count += 1;
  }
</script>

<button on:click={increment}>
  Clicked {count} times
</button>

<style>
  button { color: red; }
</style>
""",
        {"script": 1, "button": 9, "style": 13},
    ),
    "css": (
        "site.css",
        """\
/* Buttons. */
.button {
  color: red;
}

@media (max-width: 600px) {
  .button { color: blue; }
}

#header .title {
  font-size: 2em;
}
""",
        {".button": 1, "(max-width: 600px)": 6, "#header .title": 10},
    ),
    "haskell": (
        "Client.hs",
        """\
module Client where

-- | A request.
data Request = Request { path :: String }

class Sender a where
  send :: a -> String

retryUpload :: Int -> Bool
retryUpload n = n > 0
""",
        {"Request": 4, "Sender": 6, "retryUpload": 9},
    ),
    "elixir": (
        "client.ex",
        """\
defmodule Demo.Client do
  @moduledoc "Talks HTTP."

  def send_request(path) do
    path
  end

  defp helper(x), do: x
end
""",
        {"Demo.Client": 1, "Demo.Client.send_request": 4, "Demo.Client.helper": 8},
    ),
    "julia": (
        "client.jl",
        """\
module Client

"Talks HTTP."
struct Request
    path::String
end

function send(r::Request)
    return r.path
end

end
""",
        {"Client": 1, "Client.Request": 4, "Client.send": 8},
    ),
    "zig": (
        "client.zig",
        """\
const std = @import("std");

/// A request.
const Request = struct {
    path: []const u8,
};

pub fn send(r: Request) []const u8 {
    return r.path;
}

test "send" {
    _ = send(.{ .path = "/" });
}
""",
        {"Request": 3, "send": 8},
    ),
    "ocaml": (
        "client.ml",
        """\
(* A request. *)
type request = { path : string }

let send r = r.path

module Store = struct
  let save () = ()
end
""",
        {"request": 1, "send": 4, "Store": 6},
    ),
    "terraform": (
        "main.tf",
        """\
# The web server.
resource "aws_instance" "web" {
  ami           = "ami-123"
  instance_type = "t3.micro"
}

variable "region" {
  default = "eu-west-1"
}

output "ip" {
  value = aws_instance.web.public_ip
}
""",
        {"resource aws_instance web": 2, "variable region": 7, "output ip": 11},
    ),
    "make": (
        "Makefile",
        """\
CC = gcc

# Builds everything.
all: app

app: main.o util.o
	$(CC) -o $@ $^

clean:
	rm -f *.o app
""",
        {"all": 3, "app": 6, "clean": 9},
    ),
    "powershell": (
        "deploy.ps1",
        """\
# Deploys the site.
function Deploy-Site {
    param([string]$Path)
    Copy-Item $Path -Destination C:\\srv
}

class Server {
    [string]$Name
}
""",
        {"Deploy-Site": 2, "Server": 7},
    ),
    "groovy": (
        "build.gradle",
        """\
plugins {
    id 'java'
}

def greet(name) {
    println "hi ${name}"
}

class Helper {
    def run() { }
}
""",
        {"greet": 5, "Helper": 9},
    ),
}


@pytest.fixture(scope="module")
def tiny(embedder: coarch.Embedder) -> Chunker:
    """A small limit: outer definitions do not fit, so nested ones become chunks of their own."""
    return Chunker(embedder.count_tokens, 40, target_tokens=20)


def first_lines(chunks: list[Chunk]) -> dict[str, int]:
    """Each symbol's first line, over the chunks that carry it (merged symbols split)."""
    out: dict[str, int] = {}
    for c in chunks:
        for name in (c.symbol or "").split(", "):
            if name:
                out.setdefault(name, c.start_line)
    return out


def test_at_least_25_languages_have_a_grammar_and_a_query() -> None:
    languages = grammar_languages()
    assert len(languages) >= 25
    for language in languages:
        assert ts_language(language) is not None, language
        assert definition_patterns(language), language


@pytest.mark.parametrize("language", sorted(grammar_languages()))
def test_every_query_pattern_compiles(language: str) -> None:
    """A language's own patterns all compile; only inherited ones (JavaScript's under
    TypeScript) may name a node its grammar lacks, and are then dropped."""
    import tree_sitter

    ts_lang = ts_language(language)
    text = resources.files("coarch").joinpath("queries", f"{language}.scm").read_text()
    for pattern in split_patterns(text):
        tree_sitter.Query(ts_lang, pattern)  # raises on a node type the grammar lacks


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_definitions_and_boundaries_per_language(
    tiny: Chunker, embedder: coarch.Embedder, language: str
) -> None:
    path, text, expected = SAMPLES[language]
    assert language_for(path) == language
    chunks = tiny.chunk(path, text, language)
    assert_well_formed(chunks, text, embedder.count_tokens, 40)
    found = first_lines(chunks)
    assert {s: found.get(s) for s in expected} == expected, [
        (c.start_line, c.symbol) for c in chunks
    ]
    assert all(c.language == language for c in chunks)


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_no_chunk_exceeds_the_model_input(embedder: coarch.Embedder, language: str) -> None:
    path, text, _ = SAMPLES[language]
    big = "\n".join([text] * 40)  # definitions far over the limit are cut, never truncated
    chunker = Chunker(embedder.count_tokens, embedder.max_seq_length)
    chunks = chunker.chunk(path, big, language)
    assert_well_formed(chunks, big, embedder.count_tokens, embedder.max_seq_length)
    assert sum(1 for c in chunks if c.symbol) >= len(chunks) // 2


def test_vue_script_block_in_typescript_and_javascript(tiny: Chunker) -> None:
    assert script_language('<script setup lang="ts">') == "typescript"
    assert script_language("<script>") == "javascript"
    assert script_language('<script type="text/typescript">') == "typescript"
    path, text, _ = SAMPLES["vue"]
    # A TypeScript-only construct is a definition only when the block is parsed as TypeScript.
    ts = text.replace(
        "export class Counter {", "interface Props { n: number }\nexport class Counter {"
    )
    assert "script.Props" in first_lines(tiny.chunk(path, ts, "vue"))


def test_detection_by_extension_shebang_and_file_name() -> None:
    cases = {
        "src/App.kt": "kotlin",
        "build.gradle.kts": "kotlin",
        "Program.cs": "csharp",
        "lib/x.rb": "ruby",
        "Rakefile": "ruby",
        "Gemfile": "ruby",
        "index.php": "php",
        "App.swift": "swift",
        "Main.scala": "scala",
        "init.lua": "lua",
        "run.sh": "shell",
        "db/schema.sql": "sql",
        "docs/guide.md": "markdown",
        ".github/ci.yml": "yaml",
        "Cargo.toml": "toml",
        "package.json": "json",
        "App.vue": "vue",
        "App.svelte": "svelte",
        "site.css": "css",
        "Main.hs": "haskell",
        "mix.exs": "elixir",
        "x.jl": "julia",
        "main.zig": "zig",
        "x.ml": "ocaml",
        "main.tf": "terraform",
        "Makefile": "make",
        "GNUmakefile": "make",
        "deploy.ps1": "powershell",
        "build.gradle": "groovy",
        "Dockerfile": "dockerfile",
        "view.tsx": "tsx",
        "view.jsx": "javascript",
    }
    for path, language in cases.items():
        assert language_for(path) == language, path
    assert language_for("bin/tool", "#!/usr/bin/env bash") == "shell"
    assert language_for("bin/tool", "#!/usr/bin/env ruby") == "ruby"
    assert language_for("bin/tool", "#!/usr/bin/env pwsh") == "powershell"
    assert language_for("bin/tool", "#!/usr/bin/env -S deno run") == "typescript"


def test_lang_aliases() -> None:
    cases = {
        "ts": "typescript",
        "js": "javascript",
        "kt": "kotlin",
        "rb": "ruby",
        "cs": "csharp",
        "C#": "csharp",
        "sh": "shell",
        "bash": "shell",
        "yml": "yaml",
        "golang": "go",
        "c++": "cpp",
        "Kotlin": "kotlin",
        "md": "markdown",
        "Makefile": "make",
        "tf": "terraform",
        ".py": "python",
        "rust": "rust",
    }
    for name, language in cases.items():
        assert canonical_language(name) == language, name


_TRACE_HEADERS = "\n".join(f'        .header("X-Trace-{i}", traceValue({i}))' for i in range(14))
KOTLIN_BIG_CLASS = f"""\
package demo.http

class RequestFactory(private val base: String) {{
  fun get(path: String): Request = Request.Builder().url(base + path).build()

  fun traced(path: String, retries: Int): Request {{
    val url = base + path
    check(retries >= 0) {{ "retries: $retries" }}
    val request =
      Request
        .Builder()
        .url(url)
{_TRACE_HEADERS}
        .build()
    return request.newBuilder().tag(retries).build()
  }}

  fun delete(path: String): Request = Request.Builder().url(base + path).delete().build()
}}
"""


def test_kotlin_class_too_big_is_cut_at_its_methods_and_statements(
    embedder: coarch.Embedder,
) -> None:
    chunker = Chunker(embedder.count_tokens, embedder.max_seq_length)
    text = KOTLIN_BIG_CLASS
    assert embedder.count_tokens(text) > embedder.max_seq_length  # the class cannot be one chunk
    chunks = chunker.chunk("demo/RequestFactory.kt", text, "kotlin")
    assert_well_formed(chunks, text, embedder.count_tokens, embedder.max_seq_length)
    found = first_lines(chunks)
    assert (
        found["RequestFactory.get"],
        found["RequestFactory.traced"],
        found["RequestFactory.delete"],
    ) == (3, 6, 31)
    # `traced` is over one chunk: it is cut before its statement `val request =` (line 9),
    # not inside that statement's builder chain to fill the first piece.
    traced = [c for c in chunks if c.symbol == "RequestFactory.traced"]
    assert len(traced) >= 2 and traced[0].start_line == 6
    assert traced[1].start_line == 9 and traced[1].text.startswith("    val request =")
    assert traced[-1].text.endswith("    return request.newBuilder().tag(retries).build()\n  }")


_CONSTANTS = "\n".join(f"const val RETRY_{i} = {i}" for i in range(40))
_IMPORTS = "\n".join(f"import okio.Thing{i}" for i in range(6))
KOTLIN_PREAMBLE = f"""\
/*
 * Copyright (C) 2024 Demo Authors. Licensed under the Apache License, Version 2.0.
 */
package demo.http

{_IMPORTS}

{_CONSTANTS}

fun send(path: String): String = path
"""


def test_kotlin_file_preamble_stays_together(embedder: coarch.Embedder) -> None:
    chunker = Chunker(embedder.count_tokens, embedder.max_seq_length)
    text = KOTLIN_PREAMBLE
    chunks = chunker.chunk("demo/Retry.kt", text, "kotlin")
    assert_well_formed(chunks, text, embedder.count_tokens, embedder.max_seq_length)
    # License, package and imports are one chunk, not filled up with the constants after
    # them (which are cut between their own lines).
    assert (chunks[0].start_line, chunks[0].end_line) == (1, 11)
    assert chunks[0].text.endswith("import okio.Thing5")
    assert chunks[1].text.startswith("const val RETRY_0 = 0")
    assert all(c.text.split("\n")[0].startswith(("const val", "fun send")) for c in chunks[1:])
