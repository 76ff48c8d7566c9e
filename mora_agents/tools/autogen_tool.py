"""A registered tool as an autogen tool: what an agent calls (imported only by agents, so that the registry loads
without autogen)."""

from __future__ import annotations

import asyncio
import typing
from typing import TYPE_CHECKING, Any

from autogen_core import CancellationToken
from autogen_core.tools import BaseTool
from pydantic import BaseModel

if TYPE_CHECKING:
    from mora_agents.tools.registry import ToolSpec


class SchemaTool(BaseTool[BaseModel, BaseModel]):
    """autogen's tool interface over a registered function, with the registry's argument model."""

    def __init__(self, spec: ToolSpec) -> None:
        super().__init__(spec.args_model, typing.get_type_hints(spec.func).get("return", BaseModel), spec.name,
                         spec.description)
        self.func = spec.func

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        return await asyncio.to_thread(self.func, **{name: getattr(args, name) for name in type(args).model_fields})
