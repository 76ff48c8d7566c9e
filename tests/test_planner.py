from __future__ import annotations

import asyncio
import json

import pytest
from autogen_core import CancellationToken
from autogen_core.models import ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fake_openai import FakeOpenAI, text_reply

from mora_agents.agents.messages import PlanMessage, RequestMessage, StepFailedMessage
from mora_agents.agents.planner import PlannerAgent
from mora_agents.llm.offline import OfflineChatCompletionClient, enhance
from mora_agents.sop.loader import find_sops
from mora_agents.sop.messages import UserRequest

SOPS = {name: sop for name, (sop, _) in find_sops().items()}


def plan(request: UserRequest, client=None):
    agent = PlannerAgent(client or OfflineChatCompletionClient(), SOPS)
    response = asyncio.run(agent.on_messages([RequestMessage(content=request, source="user")], CancellationToken()))
    return response.chat_message


@pytest.mark.parametrize("request_, task, inputs", [
    (UserRequest(text="a red fox running through snow, 20 seconds"), "text_to_video",
     {"prompt": "a red fox running through snow, 20 seconds", "duration": 20.0}),
    (UserRequest(text="the cat starts dancing", images=["inputs/1-cat.png"]), "image_to_video",
     {"image": "inputs/1-cat.png", "prompt": "the cat starts dancing"}),
    (UserRequest(text="extend this by 4 seconds", videos=["inputs/1-a.mp4"]), "extend_video",
     {"video": "inputs/1-a.mp4", "prompt": "extend this by 4 seconds", "duration": 4.0}),
    (UserRequest(text="make it look like a 1920s film", videos=["inputs/1-a.mp4"]), "edit_video",
     {"video": "inputs/1-a.mp4", "prompt": "make it look like a 1920s film"}),
    (UserRequest(text="a village in Minecraft at sunset"), "digital_world",
     {"prompt": "a village in Minecraft at sunset"}),
    (UserRequest(text="this house in a digital world", images=["inputs/1-h.png"]), "digital_world",
     {"prompt": "this house in a digital world", "image": "inputs/1-h.png"}),
    (UserRequest(text="join them with a sunrise", videos=["inputs/1-a.mp4", "inputs/2-b.mp4"]), "connect_videos",
     {"video_a": "inputs/1-a.mp4", "video_b": "inputs/2-b.mp4", "prompt": "join them with a sunrise"}),
    (UserRequest(text="a fox", task="digital_world", duration=8), "digital_world",
     {"prompt": "a fox", "duration": 8}),
    # chat follow-ups: "it" is the previous turn's result
    (UserRequest(text="extend it by 4 seconds", previous="inputs/1-result.mp4"), "extend_video",
     {"video": "inputs/1-result.mp4", "prompt": "extend it by 4 seconds", "duration": 4.0}),
    (UserRequest(text="now make it 1920s style", previous="inputs/1-result.mp4"), "edit_video",
     {"video": "inputs/1-result.mp4", "prompt": "now make it 1920s style"}),
    (UserRequest(text="connect it with clip.mp4", videos=["inputs/1-clip.mp4"], previous="inputs/2-result.mp4"),
     "connect_videos", {"video_a": "inputs/2-result.mp4", "video_b": "inputs/1-clip.mp4",
                        "prompt": "connect it with clip.mp4"}),
    (UserRequest(text="a lighthouse in a storm", previous="inputs/1-result.mp4"), "text_to_video",
     {"prompt": "a lighthouse in a storm"}),  # a new request leaves the previous result unused
])
def test_offline_routing(request_: UserRequest, task: str, inputs: dict) -> None:
    message = plan(request_)
    assert isinstance(message, PlanMessage), message
    assert message.content.task == task
    assert message.content.inputs == inputs


def test_attachment_without_a_slot_is_rejected() -> None:
    message = plan(UserRequest(text="a fox", images=["inputs/1-a.png"], task="text_to_video"))
    assert isinstance(message, StepFailedMessage) and message.content.rejected
    assert "inputs/1-a.png: attached but task 'text_to_video' has no input for it" in message.content.error


def test_offline_enhancement_adds_visual_detail() -> None:
    text = enhance("a red fox running through snow")
    assert text.startswith("A red fox running through snow, ")
    for detail in ("snow-covered landscape", "daylight", "tracking shot", "photorealistic"):
        assert detail in text
    assert "moonlit" in enhance("an owl at night") and "Minecraft" in enhance("a castle in minecraft")


def _openai_client(base_url: str) -> OpenAIChatCompletionClient:
    info = ModelInfo(vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True)
    return OpenAIChatCompletionClient(model="fake-model", base_url=base_url, api_key="test", model_info=info)


@pytest.mark.parametrize("task, request_", [
    ("text_to_video", UserRequest(text="a fox")),
    ("image_to_video", UserRequest(text="animate it", images=["inputs/1-a.png"])),
    ("extend_video", UserRequest(text="more", videos=["inputs/1-a.mp4"])),
    ("edit_video", UserRequest(text="winter", videos=["inputs/1-a.mp4"])),
    ("digital_world", UserRequest(text="a voxel town")),
    ("connect_videos", UserRequest(text="bridge them", videos=["inputs/1-a.mp4", "inputs/2-b.mp4"])),
])
def test_routing_through_an_openai_compatible_server(task: str, request_: UserRequest) -> None:
    reply = {"task": task, "prompt": request_.text, "duration": None, "reason": "scripted"}
    with FakeOpenAI([text_reply(json.dumps(reply))]) as server:
        message = plan(request_, _openai_client(server.base_url))
    assert isinstance(message, PlanMessage) and message.content.task == task
    body = server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert "a fox" in body["messages"][-1]["content"] or request_.text in body["messages"][-1]["content"]


def test_invalid_plans_are_retried_then_fail_cleanly() -> None:
    good = {"task": "text_to_video", "prompt": "a fox", "duration": None, "reason": "ok"}
    with FakeOpenAI([text_reply("not json"), text_reply(json.dumps({**good, "task": "paint"})),
                     text_reply(json.dumps(good))]) as server:
        message = plan(UserRequest(text="a fox"), _openai_client(server.base_url))
    assert isinstance(message, PlanMessage)
    retry = server.requests[2]["body"]["messages"][-1]["content"]
    assert "unknown task 'paint'" in retry
    with FakeOpenAI([text_reply("{}")] * 3) as server:
        message = plan(UserRequest(text="a fox"), _openai_client(server.base_url))
    assert isinstance(message, StepFailedMessage)
    assert "no valid plan in 3 tries" in message.content.error
