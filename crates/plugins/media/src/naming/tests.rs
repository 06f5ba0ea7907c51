//! Jellyfin's naming tests (`tests/Jellyfin.Naming.Tests`: `TV/EpisodeNumberTests.cs`,
//! `TV/SeasonNumberTests.cs`, `TV/MultiEpisodeTests.cs`, `Video/CleanDateTimeTests.cs`,
//! `Video/MultiVersionTests.cs`, `Music/…`) re-expressed as tables.

use super::*;

/// `Folder/File.ext` as Jellyfin's tests write it: the season comes from the folder.
fn episode(path: &str) -> EpisodeName {
    let (folder, file) = path.rsplit_once('/').unwrap_or(("", path));
    let folder = folder.rsplit('/').next().unwrap_or("");
    parse_episode(stem(file), season_folder(folder))
}

#[test]
fn episode_numbers() {
    // (path, episode) — EpisodeNumberTests.
    let cases: &[(&str, u32)] = &[
        ("Watchmen (2019)/Watchmen 1x03 [WEBDL-720p][EAC3 5.1][h264][-TBS] - She Was Killed by Space Junk.mkv", 3),
        ("The Daily Show/The Daily Show 25x22 - [WEBDL-720p][AAC 2.0][x264] Noah Baumbach-TBS.mkv", 22),
        ("Castle Rock 2x01 Que el rio siga su curso [WEB-DL HULU 1080p h264 Dual DD5.1 Subs].mkv", 1),
        ("After Life 1x06 Episodio 6 [WEB-DL NF 1080p h264 Dual DD 5.1 Sub].mkv", 6),
        ("Season 02/S02E03 blah.avi", 3),
        ("Season 2/02x03 - 02x04 - 02x15 - Ep Name.mp4", 3),
        ("Season 02/02x03 - x04 - x15 - Ep Name.mp4", 3),
        ("Season 1/01x02 blah.avi", 2),
        ("Season 1/S01x02 blah.avi", 2),
        ("Season 1/S01E02 blah.avi", 2),
        ("Season 2/Elementary - 02x03-04-15 - Ep Name.mp4", 3),
        ("Season 1/S01xE02 blah.avi", 2),
        ("Season 1/seriesname S01E02 blah.avi", 2),
        ("Season 2/Episode - 16.avi", 16),
        ("Season 2/Episode 16.avi", 16),
        ("Season 2/Episode 16 - Some Title.avi", 16),
        ("Season 2/16 Some Title.avi", 16),
        ("Season 2/16 - 12 Some Title.avi", 16),
        ("Season 2/7 - 12 Angry Men.avi", 7),
        ("Season 1/seriesname 01x02 blah.avi", 2),
        ("Season 25/The Simpsons.S25E09.Steal this episode.mp4", 9),
        ("Season 1/seriesname S01x02 blah.avi", 2),
        ("Season 2/Elementary - 02x03 - 02x04 - 02x15 - Ep Name.mp4", 3),
        ("Season 1/seriesname S01xE02 blah.avi", 2),
        ("Season 02/Elementary - 02x03 - x04 - x15 - Ep Name.mp4", 3),
        ("Season 02/Elementary - 02x03x04x15 - Ep Name.mp4", 3),
        ("Season 2/02x03-04-15 - Ep Name.mp4", 3),
        ("Season 02/02x03x04x15 - Ep Name.mp4", 3),
        ("Season 02/Elementary - 02x03-E15 - Ep Name.mp4", 3),
        ("Season 1/Elementary - S01E23-E24-E26 - The Woman.mp4", 23),
        ("Season 2009/S2009E23-E24-E26 - The Woman.mp4", 23),
        ("Season 2009/2009x02 blah.avi", 2),
        ("Season 2009/S2009x02 blah.avi", 2),
        ("Season 2009/S2009E02 blah.avi", 2),
        ("Season 2009/seriesname 2009x02 blah.avi", 2),
        ("Season 2009/Elementary - 2009x03x04x15 - Ep Name.mp4", 3),
        ("Season 2009/2009x03x04x15 - Ep Name.mp4", 3),
        ("Season 2009/Elementary - 2009x03-E15 - Ep Name.mp4", 3),
        ("Season 2009/S2009xE02 blah.avi", 2),
        ("Season 2009/seriesname S2009E02 blah.avi", 2),
        ("Season 2009/2009x03 - 2009x04 - 2009x15 - Ep Name.mp4", 3),
        ("Season 2009/seriesname S2009x02 blah.avi", 2),
        ("Season 2009/Elementary - 2009x03 - 2009x04 - 2009x15 - Ep Name.mp4", 3),
        ("Season 2009/seriesname S2009xE02 blah.avi", 2),
        ("Season 2009/Elementary - 2009x03-04-15 - Ep Name.mp4", 3),
        ("Season 2009/2009x03-04-15 - Ep Name.mp4", 3),
        ("Season 2009/Elementary - 2009x03 - x04 - x15 - Ep Name.mp4", 3),
        ("Season 1/02 - blah-02 a.avi", 2),
        ("Season 1/02 - blah.avi", 2),
        ("Season 2/02 - blah 14 blah.avi", 2),
        ("Season 2/02.avi", 2),
        ("Season 2/2. Infestation.avi", 2),
        (
            "The Wonder Years/The.Wonder.Years.S04.PDTV.x264-JCH/The Wonder Years s04e07 Christmas Party NTSC PDTV.avi",
            7,
        ),
        ("Running Man/Running Man S2017E368.mkv", 368),
        ("Season 2/[HorribleSubs] Hunter X Hunter - 136 [720p].mkv", 136),
        ("Case Closed (1996-2007)/Case Closed - 317.mkv", 317),
        ("The Simpsons/The Simpsons.S25E08.Steal this episode.mp4", 8),
        ("The Simpsons/The Simpsons - 02 - Ep Name.avi", 2),
        ("The Simpsons/02.avi", 2),
        ("The Simpsons/02 - Ep Name.avi", 2),
        ("The Simpsons/02-Ep Name.avi", 2),
        ("The Simpsons/02.EpName.avi", 2),
        ("The Simpsons/The Simpsons - 02.avi", 2),
        ("The Simpsons/The Simpsons - 02 Ep Name.avi", 2),
        ("The Simpsons/The Simpsons 5 - 02 - Ep Name.avi", 2),
        ("The Simpsons/The Simpsons 5 - 02 Ep Name.avi", 2),
        ("Log Horizon 2/[HorribleSubs] Log Horizon 2 - 03 [720p].mkv", 3),
        ("Season 1/MOONLIGHTING_s01e01-e04.mkv", 1),
        ("Season 1/series-s09e14-1080p.mkv", 14),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter(|(path, want)| episode(path).episode != Some(*want))
        .map(|(path, want)| format!("{path}: want {want}, got {:?}", episode(path)))
        .collect();
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn season_numbers() {
    // (path, season) — SeasonNumberTests and EpisodePathParserTest.
    let cases: &[(&str, Option<u32>)] = &[
        ("The Daily Show/The Daily Show 25x22 - [WEBDL-720p][AAC 2.0][x264] Noah Baumbach-TBS.mkv", Some(25)),
        ("/Show/Season 02/S02E03 blah.avi", Some(2)),
        ("Season 1/seriesname S01x02 blah.avi", Some(1)),
        ("Season 1/S01x02 blah.avi", Some(1)),
        ("Season 1/seriesname S01xE02 blah.avi", Some(1)),
        ("Season 1/01x02 blah.avi", Some(1)),
        ("Season 2009/S2009E02 blah.avi", Some(2009)),
        ("Season 25/The Simpsons.S25E09.Steal this episode.mp4", Some(25)),
        (
            "The Wonder Years/The.Wonder.Years.S04.PDTV.x264-JCH/The Wonder Years s04e07 Christmas Party NTSC PDTV.avi",
            Some(4),
        ),
        ("Running Man/Running Man S2017E368.mkv", Some(2017)),
        ("Season 2/02 - blah.avi", Some(2)),
        ("Season 00/Show - 01 - Pilot Special.mkv", Some(0)),
        ("Specials/Show - 01.mkv", Some(0)),
        ("Show/Show Season 3 Episode 5 Name.avi", Some(3)),
        ("Breaking Bad/Season 5/Breaking Bad S05E16.mkv", Some(5)),
    ];
    for (path, want) in cases {
        assert_eq!(episode(path).season, *want, "{path}");
    }
}

#[test]
fn multi_episode_files() {
    // (path, last episode) — MultiEpisodeTests.
    let cases: &[(&str, Option<u32>)] = &[
        ("Season 2/Elementary - 02x03 - 02x04 - 02x15 - Ep Name.mp4", Some(15)),
        ("Season 02/Elementary - 02x03 - x04 - x15 - Ep Name.mp4", Some(15)),
        ("Season 02/Elementary - 02x03x04x15 - Ep Name.mp4", Some(15)),
        ("Season 2/02x03-04-15 - Ep Name.mp4", Some(15)),
        ("Season 02/Elementary - 02x03-E15 - Ep Name.mp4", Some(15)),
        ("Season 1/Elementary - S01E23-E24-E26 - The Woman.mp4", Some(26)),
        ("Season 2009/S2009E23-E24-E26 - The Woman.mp4", Some(26)),
        ("Season 2009/2009x03x04x15 - Ep Name.mp4", Some(15)),
        ("Season 1/MOONLIGHTING_s01e01-e04.mkv", Some(4)),
        ("Show/Show S01E01-E02.mkv", Some(2)),
        ("Season 1/series-s09e14-1080p.mkv", None),
        ("Season 1/series-s09e14-1080i.mkv", None),
        ("Season 1/seriesname S01E02 blah.avi", None),
        ("Season 2/16 - 12 Some Title.avi", None),
        ("Season 2/7 - 12 Angry Men.avi", None),
        ("Season 2/Episode - 16.avi", None),
    ];
    for (path, want) in cases {
        assert_eq!(episode(path).end_episode, *want, "{path}");
    }
}

#[test]
fn season_folders() {
    let cases: &[(&str, Option<u32>)] = &[
        ("Season 01", Some(1)),
        ("Season 1", Some(1)),
        ("season 10", Some(10)),
        ("Season 00", Some(0)),
        ("Specials", Some(0)),
        ("S03", Some(3)),
        ("Staffel 2", Some(2)),
        ("Season 2009", Some(2009)),
        ("Extras", None),
        ("Breaking Bad (2008)", None),
    ];
    for (name, want) in cases {
        assert_eq!(season_folder(name), *want, "{name}");
    }
}

#[test]
fn movie_names_and_years() {
    // (stem, title, year) — CleanDateTimeTests and CleanStringTests.
    let cases: &[(&str, &str, Option<i32>)] = &[
        ("The Wolf of Wall Street (2013)", "The Wolf of Wall Street", Some(2013)),
        ("The Wolf of Wall Street 2 (2013)", "The Wolf of Wall Street 2", Some(2013)),
        ("The Wolf of Wall Street - 2 (2013)", "The Wolf of Wall Street - 2", Some(2013)),
        ("The Wolf of Wall Street 2001 (2013)", "The Wolf of Wall Street 2001", Some(2013)),
        ("300 (2006)", "300", Some(2006)),
        ("300 2 (2006)", "300 2", Some(2006)),
        ("300 - 2 (2006)", "300 - 2", Some(2006)),
        ("300 2001 (2006)", "300 2001", Some(2006)),
        ("300 (2006).bluray.disc1", "300", Some(2006)),
        ("curse.of.chucky.2013.stv.unrated.multi.1080p.bluray.x264-rough", "curse of chucky", Some(2013)),
        ("Arrival.2016.2160p.Blu-Ray.HEVC", "Arrival", Some(2016)),
        ("Rain Man 1988 REMASTERED 1080p BluRay x264 AAC - JEFF", "Rain Man", Some(1988)),
        ("My Movie 2013.12.09", "My Movie 2013.12.09", None),
        ("My Movie 2013-12-09", "My Movie 2013-12-09", None),
        ("My Movie 20130", "My Movie 20130", None),
        ("My Movie (1997) - GreatestReleaseGroup 2019", "My Movie", Some(1997)),
        ("First Man (2018) 1080p", "First Man", Some(2018)),
        ("First Man (2018) - 1080p", "First Man", Some(2018)),
        ("Maximum Ride - 2016 - WEBDL-1080p - x264 AC3", "Maximum Ride", Some(2016)),
        ("Robin Hood [Multi-Subs] [2018]", "Robin Hood", Some(2018)),
        ("3.Days.to.Kill.2014.720p.BluRay.x264.YIFY", "3 Days to Kill", Some(2014)),
        ("3 days to kill (2005)", "3 days to kill", Some(2005)),
        ("1917 (2019)", "1917", Some(2019)),
        ("1917.2019.1080p", "1917", Some(2019)),
        ("2012", "2012", None),
        ("Heat", "Heat", None),
    ];
    for (input, title, year) in cases {
        let m = parse_movie(input);
        assert_eq!((m.title.as_str(), m.year), (*title, *year), "{input}");
    }
}

#[test]
fn movie_versions() {
    // (folder, stem, version) — MultiVersionTests: a file named after its folder plus
    // ` - label` is a version of the folder's movie.
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("Movie (2020)", "Movie (2020) - 1080p", Some("1080p")),
        ("Movie (2020)", "Movie (2020) - 720p", Some("720p")),
        ("Movie (2020)", "Movie (2020) - Directors Cut", Some("Directors Cut")),
        ("Movie (2020)", "Movie (2020)", None),
        ("Iron Man", "Iron Man - 3d", Some("3d")),
        ("Iron Man", "Iron Man - 3d-hsbs", Some("3d-hsbs")),
        ("Iron Man", "Iron Man", None),
        ("Iron Man (2008)", "Iron Man (2008) [1080p]", Some("1080p")),
    ];
    for (folder, input, version) in cases {
        let m = parse_movie_file(Some(folder), input);
        assert_eq!(m.version.as_deref(), *version, "{folder}/{input}");
        assert_eq!(m.title, parse_movie(folder).title, "{folder}/{input}");
    }
}

#[test]
fn music_tracks() {
    // (folders, stem, (artist, album, disc, track, title))
    type Want<'a> = (Option<&'a str>, Option<&'a str>, Option<u32>, Option<u32>, &'a str);
    let cases: &[(&[&str], &str, Want)] = &[
        (&["Artist", "Album"], "01 - Song", (Some("Artist"), Some("Album"), None, Some(1), "Song")),
        (&["Artist", "Album (2001)"], "07 Song Title", (Some("Artist"), Some("Album"), None, Some(7), "Song Title")),
        (&["Artist", "Album", "Disc 2"], "03 - Song", (Some("Artist"), Some("Album"), Some(2), Some(3), "Song")),
        (&["Artist", "Album", "CD1"], "1. Song", (Some("Artist"), Some("Album"), Some(1), Some(1), "Song")),
        (&["Artist", "Album"], "2-05 Song", (Some("Artist"), Some("Album"), Some(2), Some(5), "Song")),
        (&["Artist", "Album"], "Artist - Song", (Some("Artist"), Some("Album"), None, None, "Song")),
        (&["Album"], "Song", (None, Some("Album"), None, None, "Song")),
    ];
    for (folders, input, want) in cases {
        let t = parse_track(folders, input);
        let got = (t.artist.as_deref(), t.album.as_deref(), t.disc, t.track, t.title.as_str());
        assert_eq!(got, *want, "{folders:?}/{input}");
    }
}

#[test]
fn extras_are_not_items() {
    assert!(is_extra(&["Movie (2020)"], "Movie (2020)-trailer.mkv"));
    assert!(is_extra(&["Movie (2020)", "Extras"], "Making of.mkv"));
    assert!(is_extra(&["Movie (2020)"], "sample.mkv"));
    assert!(!is_extra(&["Movie (2020)"], "Movie (2020).mkv"));
    assert!(is_video("a.MKV") && is_audio("b.flac") && is_image("folder.jpg") && !is_video("notes.txt"));
}

#[test]
fn provider_ids_in_names() {
    // (names, tmdb, tvdb) — Jellyfin's `[tmdbid-…]` convention and its variants.
    let cases: &[(&[&str], Option<i64>, Option<i64>)] = &[
        (&["The Matrix (1999) [tmdbid-603]"], Some(603), None),
        (&["The Matrix (1999) [tmdbid=603] - 1080p"], Some(603), None),
        (&["The Matrix (1999) {tmdb-603}"], Some(603), None),
        (&["Breaking Bad (2008) [tvdbid-81189]"], None, Some(81189)),
        (&["Show (2010) [TVDBID-5] [tmdbid-7]"], Some(7), Some(5)),
        (&["Movie (2001)", "Movie (2001) [tmdbid-9]"], Some(9), None),
        (&["Movie [tmdbid-1]", "Movie [tmdbid-2]"], Some(1), None),
        (&["Movie (2001) [imdbid-tt0133093]"], None, None),
        (&["Movie (2001) [tmdbid-]"], None, None),
    ];
    for (names, tmdb, tvdb) in cases {
        assert_eq!(provider_ids(names), ProviderIds { tmdb: *tmdb, tvdb: *tvdb }, "{names:?}");
    }
    // The tags are not part of the title.
    assert_eq!(parse_movie("The Matrix (1999) {tmdb-603}").title, "The Matrix");
    assert_eq!(parse_movie("The Matrix [tmdbid-603] (1999)").title, "The Matrix");
    assert_eq!(parse_series_folder("Breaking Bad (2008) [tvdbid-81189]").year, Some(2008));
}
