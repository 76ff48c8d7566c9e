"""The group chat: planner, conductor and the step agents in an autogen SelectorGroupChat.

The selector follows the SOP (see docs/design.md): a request goes to the planner, a step request to the
agent it names, everything else back to the conductor; the chat ends with the conductor's RunFinished.

A turn of the team (one `run_stream` call) stops at each checkpoint: a plan, a step result, a review
request. The runner then saves the team's state and either asks for the review decision and passes it as
the next task (autogen's human-in-the-loop by handoff) or simply runs the team again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autogen_agentchat.conditions import FunctionalTermination, MaxMessageTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core.models import ChatCompletionClient

from mora_agents.agents.conductor import ConductorAgent
from mora_agents.agents.messages import (
    MESSAGE_TYPES,
    PlanMessage,
    RequestMessage,
    ReviewRequestMessage,
    RunFinishedMessage,
    StepRequestMessage,
    StepResultMessage,
)
from mora_agents.agents.planner import PlannerAgent
from mora_agents.agents.step_agent import MediaAgent, ModelAgent, StepAgent
from mora_agents.llm.prompts import PROMPT_AGENT_SYSTEM, STORY_AGENT_SYSTEM, TOOL_AGENT_SYSTEM
from mora_agents.sop.roles import ROLES
from mora_agents.sop.schema import SOP

MAX_MESSAGES = 2000
CHECKPOINTS = (PlanMessage, StepResultMessage, ReviewRequestMessage, RunFinishedMessage)
"""The messages after which a turn of the team stops, so that its state can be saved."""


def select_speaker(thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> str:
    last = next(m for m in reversed(thread) if isinstance(m, BaseChatMessage))
    if isinstance(last, RequestMessage):
        return "planner"
    if isinstance(last, StepRequestMessage):
        return last.content.agent
    return "conductor"


def step_agents(model_client: ChatCompletionClient, run_dir: Path) -> list[StepAgent]:
    agents: list[StepAgent] = []
    for name, role in ROLES.items():
        if not role.llm:
            agents.append(MediaAgent(name, role.description, run_dir))
            continue
        system = {"prompt_agent": PROMPT_AGENT_SYSTEM, "story_agent": STORY_AGENT_SYSTEM}.get(name) or \
            TOOL_AGENT_SYSTEM.format(role=name.replace("_", " "), description=role.description)
        agents.append(ModelAgent(name, role.description, run_dir, model_client, system))
    return agents


def build_team(model_client: ChatCompletionClient, sops: dict[str, SOP], conductor: ConductorAgent) -> SelectorGroupChat:
    participants = [PlannerAgent(model_client, sops), conductor, *step_agents(model_client, conductor.run_dir)]
    checkpoint = FunctionalTermination(lambda messages: any(isinstance(m, CHECKPOINTS) for m in messages))
    return SelectorGroupChat(
        participants, model_client=model_client, selector_func=select_speaker, allow_repeated_speaker=True,
        termination_condition=checkpoint | MaxMessageTermination(MAX_MESSAGES), custom_message_types=MESSAGE_TYPES,
    )
