"""The library API: plain typed functions, usable without any agent.

    from mora_agents.tools import text_to_image, image_to_video, use_settings
    with use_settings(preset="tiny"):
        image = text_to_image("a red fox running through snow")
        clip = image_to_video(image.path)
"""

from mora_agents.settings import configure, settings, use_settings
from mora_agents.tools.chain import ease_into, match_frame
from mora_agents.tools.connect import connect_images, connect_videos, join_clips
from mora_agents.tools.image import edit_image, text_to_image
from mora_agents.tools.long_video import extend_video
from mora_agents.tools.keyframe import keyframe
from mora_agents.tools.pick import pick_best
from mora_agents.tools.prompt import enhance_prompt
from mora_agents.tools.registry import REGISTRY, ToolSpec, get_tool, register
from mora_agents.tools.video import image_to_video
from mora_agents.tools.video_ops import concat_videos, first_frame, last_frame

__all__ = [
    "REGISTRY", "ToolSpec", "concat_videos", "configure", "connect_images", "connect_videos", "ease_into", "edit_image",
    "enhance_prompt", "extend_video", "first_frame", "get_tool", "image_to_video", "join_clips", "keyframe",
    "last_frame", "match_frame", "pick_best", "register", "settings", "text_to_image", "use_settings",
]
