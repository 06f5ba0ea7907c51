#!/usr/bin/env python3
"""Drives a running nexus with Jellyfin's Python client (jellyfin-apiclient-python, PyPI):
connect -> login -> list -> item -> playing/progress/stopped -> a ranged stream.

    jellyfin_python.py BASE_URL USERNAME PASSWORD     (BASE_URL: http://host:port/api/media)

Exits non-zero with a message at the first thing that does not work as with Jellyfin.
"""
import sys
import time

import requests
from jellyfin_apiclient_python import JellyfinClient


def check(cond, what):
    if not cond:
        sys.exit(f"jellyfin-apiclient-python: {what}")
    print(f"ok  {what}")


def main(url, username, password):
    client = JellyfinClient()
    client.config.app("nexus-ci", "1.0.0", "ci-python", "ci-python-device")
    client.config.data["auth.ssl"] = url.startswith("https")
    connected = client.auth.connect_to_address(url)
    check(connected, "connect_to_address (System/Info/Public)")
    result = client.auth.login(url, username, password)
    check(result.get("AccessToken"), "login (Users/AuthenticateByName, ServerId == Id)")
    token = result["AccessToken"]
    user_id = result["User"]["Id"]
    creds = client.auth.credentials.get_credentials()
    client.authenticate({"Servers": creds["Servers"]}, discover=False)

    info = client.jellyfin.get_system_info_new()
    check(info.get("ProductName") == "Jellyfin Server", "System/Info")

    views = client.jellyfin.get_views()
    check(views.get("TotalRecordCount", 0) >= 1, f"Users/{{id}}/Views: {len(views.get('Items', []))} libraries")

    # The library's first scan runs in the background after start: poll until it is done.
    deadline = time.time() + 60
    while True:
        movies = client.jellyfin.user_items(params={
            "Recursive": True, "IncludeItemTypes": "Movie", "SortBy": "SortName",
            "Fields": "MediaSources,Path", "Limit": 50,
        })
        items = movies.get("Items", [])
        if items or time.time() > deadline:
            break
        time.sleep(0.2)
    check(items, f"Items: {movies.get('TotalRecordCount')} movies")
    movie = items[0]

    item = client.jellyfin.get_item(movie["Id"])
    check(item.get("Id") == movie["Id"] and item.get("MediaSources"), f"Users/{{id}}/Items/{{id}}: {item.get('Name')}")

    play = {"ItemId": movie["Id"], "PositionTicks": 0, "CanSeek": True, "PlayMethod": "DirectPlay"}
    client.jellyfin.session_playing(play)
    client.jellyfin.session_progress({**play, "PositionTicks": 10_000_000, "IsPaused": False})
    client.jellyfin.session_stop({**play, "PositionTicks": 10_000_000})
    data = client.jellyfin.get_item(movie["Id"]).get("UserData", {})
    check(data.get("PlaybackPositionTicks") == 10_000_000, "Sessions/Playing, /Progress, /Stopped record the position")

    stream = f"{url}/Videos/{movie['Id']}/stream?static=true&api_key={token}"
    r = requests.get(stream, headers={"Range": "bytes=0-99"}, timeout=30)
    check(r.status_code == 206 and len(r.content) == 100 and r.headers.get("Content-Range", "").startswith("bytes 0-99/"),
          "ranged stream (206, Content-Range)")
    print(f"jellyfin-apiclient-python: all good as user {user_id}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
