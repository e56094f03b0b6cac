"""bff ``updates.*``: the update state a client starts from, and catching up.

Until messages exist (a later issue gives pts/qts/seq their meaning through the
sync service) the state is the same small valid one for everybody: pts 1 (the
first pts-carrying update will be pts 2; Telethon treats pts 0 as "no state" and
would re-fetch it on every connect), qts 0 (no secret chats), seq 0.
``getDifference`` answers ``differenceEmpty``: nothing was missed, and the
client keeps its state.
"""

from __future__ import annotations

import time

from teamgram.bff.rpc import RequestContext, Router
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()

INITIAL_PTS = 1
INITIAL_QTS = 0
INITIAL_SEQ = 0


@router(fn.updates.GetState)
async def get_state(ctx: RequestContext, req: fn.updates.GetState) -> types.updates.State:
    return types.updates.State(
        pts=INITIAL_PTS, qts=INITIAL_QTS, date=int(time.time()), seq=INITIAL_SEQ, unread_count=0
    )


@router(fn.updates.GetDifference)
async def get_difference(
    ctx: RequestContext, req: fn.updates.GetDifference
) -> types.updates.DifferenceEmpty:
    return types.updates.DifferenceEmpty(date=int(time.time()), seq=INITIAL_SEQ)
