// The chat panel: streams answers of the OpenAI-compatible endpoint (model "opsloop") as they arrive.

import { sse } from "./api.js";
import { $, h } from "./dom.js";

export class Chat {
  constructor() {
    this.messages = [];
    $("#chat-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.ask(); });
  }

  async ask() {
    const input = $("#chat-input");
    const question = input.value.trim();
    if (!question) return;
    input.value = "";
    const log = $("#chat-log");
    log.append(h("div", { class: "q" }, question));
    const answer = h("div", { class: "answer streaming" }, "");
    log.append(answer);
    this.messages.push({ role: "user", content: question });
    $("#chat-send").disabled = true;
    let text = "";
    try {
      await sse("/v1/chat/completions", (_, data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const piece = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
        if (piece) {
          text += piece;
          answer.textContent = text;
          log.scrollTop = log.scrollHeight;
        }
      }, { method: "POST", body: { model: "opsloop", stream: true, messages: this.messages } });
      this.messages.push({ role: "assistant", content: text });
      answer.classList.add("done");
    } catch (e) {
      answer.textContent = `${text}\n[error: ${e.message}]`;
      answer.classList.add("failed");
      this.messages.pop();
    } finally {
      answer.classList.remove("streaming");
      $("#chat-send").disabled = false;
    }
  }
}
