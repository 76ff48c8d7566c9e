"""The data-free loop's data stage: prompts written from seeds, candidate runs, judges and people selecting.

    from mora_agents.data import MakeConfig, make_data, read_seeds, select
    made = make_data(read_seeds("seeds.txt"), "data", MakeConfig(count=16, candidates=4), RunOptions(preset="full"))
    selected = select("data", reviewer=TextChooser(input))     # accepted samples in data/dataset
"""

from mora_agents.data.make import MakeConfig, MakeResult, make_data
from mora_agents.data.seeds import Seed, read_seeds
from mora_agents.data.select import (
    SKIP,
    PendingSet,
    ReviewStopped,
    SelectionResult,
    TextChooser,
    decide,
    review,
    scripted_choices,
    select,
)
from mora_agents.data.sets import CandidateSet, read_sets
from mora_agents.judges import CRITERIA, JudgeSpec, Vote, judge_specs, parse_judge, read_judges_file

__all__ = ["CRITERIA", "SKIP", "CandidateSet", "JudgeSpec", "MakeConfig", "MakeResult", "PendingSet",
           "ReviewStopped", "Seed", "SelectionResult", "TextChooser", "Vote", "decide", "judge_specs", "make_data",
           "parse_judge", "read_judges_file", "read_seeds", "read_sets", "review", "scripted_choices", "select"]
